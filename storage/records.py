"""The values the storage API hands out: records, runs, checkpoints, problems.

>>> Record(5, 3, ["r1", 1, "loss", 0.5, [], 0.0, ""]).lsn
5
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Record(NamedTuple):
    """One logical record; `lsn` names it and nothing else (invariant 1)."""

    lsn: int
    kind: int
    body: Any


class RunInfo(NamedTuple):
    """A run as the log describes it; `status` is derived when asked (see recovery.py)."""

    run_id: str
    begin_lsn: int
    meta: dict
    status: str
    end: dict | None
    last_lsn: int


class CheckpointInfo(NamedTuple):
    """A complete checkpoint: its end record (at `lsn`) is durable (invariant 4)."""

    ckpt_id: str
    run_id: str
    lsn: int
    meta: dict
    raw_bytes: int
    stored_bytes: int
    write_seconds: float


class Problem(NamedTuple):
    """One thing `Store.check()` found wrong; `kind` is a short tag such as "frame_checksum"."""

    kind: str
    segment: str | None
    offset: int | None
    lsn: int | None
    message: str


class Lost(NamedTuple):
    """A range of LSNs whose records cannot be read: damage found when opening with
    `allow_damage=True`, or a hole left where `florql check --repair` cut damaged bytes out.

    `last_lsn` is None when the range runs to the end of the log (a lost last segment).
    `segment` and `offset` say where the damaged bytes were; `reason` is one phrase.
    """

    first_lsn: int
    last_lsn: int | None
    segment: str
    offset: int
    reason: str
    kind: str = "hole"  # the Problem kind `check` reports it as (e.g. "frame_checksum")

    def describe(self) -> str:
        """One line for a report.

        >>> Lost(5, 9, "log/00000002.seg", 48, "fails its checksum").describe()
        'LSN 5-9 (log/00000002.seg at offset 48: fails its checksum)'
        """
        return f"{self.span()} ({self.segment} at offset {self.offset}: {self.reason})"

    def span(self) -> str:
        """The lost LSNs in words.

        >>> Lost(5, None, "s", 0, "x").span(), Lost(5, 4, "s", 0, "x").span()
        ('LSN 5 to the end of the log', 'no records lost')
        """
        if self.last_lsn is None:
            return f"LSN {self.first_lsn} to the end of the log"
        if self.last_lsn < self.first_lsn:
            return "no records lost"
        if self.last_lsn == self.first_lsn:
            return f"LSN {self.first_lsn}"
        return f"LSN {self.first_lsn}-{self.last_lsn}"

    @property
    def empty(self) -> bool:
        """Whether no LSN is lost (a damaged header over intact frames, a damaged MANIFEST)."""
        return self.last_lsn is not None and self.last_lsn < self.first_lsn
