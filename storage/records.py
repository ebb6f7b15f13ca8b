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
