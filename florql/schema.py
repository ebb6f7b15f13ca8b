"""Logical records as florql writes and reads them (docs/INTERFACES.md §2), stated once.

The kinds are storage's (`florql_storage.kinds`, which frames them); their bodies are florql's.
Every module that builds or reads a VALUE body does it through this module: the constructor
`value_body`, the positions below for bulk readers (`itemgetter(NAME)` over many bodies), and
the accessors. `Resumes` holds the one rule for values a resumed run superseded.

>>> body = value_body("r1", 7, "loss", 0.5, [["epoch", 2, 2]], 1.0)
>>> body[NAME], outer_iteration(body[CTX]), replay_id_of(body)
('loss', 2, '')
>>> r = Resumes()
>>> r.add(lsn=100, seq=5)
>>> r.superseded(lsn=90, seq=6), r.superseded(lsn=90, seq=5), r.superseded(lsn=120, seq=6)
(True, False, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from florql_storage.kinds import (
    LOOP,
    LOOP_END,
    REPLAY_BEGIN,
    REPLAY_END,
    RNG,
    RUN_BEGIN,
    RUN_END,
    RUN_RESUME,
    STATE,
    VALUE,
)

__all__ = [
    "CTX",
    "LOOP",
    "LOOP_END",
    "NAME",
    "REPLAY_BEGIN",
    "REPLAY_END",
    "REPLAY_ID",
    "RNG",
    "RUN_BEGIN",
    "RUN_END",
    "RUN_ID",
    "RUN_RESUME",
    "SEQ",
    "STATE",
    "TIME",
    "VAL",
    "VALUE",
    "Resumes",
    "outer_iteration",
    "replay_id_of",
    "value_body",
]

# VALUE body: [run_id, seq, name, value, ctx, t, replay_id]; replay_id is "" for recorded
# values (a list, not a dict: ~40% fewer bytes per value, and bulk readers take columns with
# itemgetter). Stores written before replay existed hold six fields.
RUN_ID, SEQ, NAME, VAL, CTX, TIME, REPLAY_ID = range(7)


def value_body(
    run_id: str, seq: int, name: str, value: Any, ctx: Sequence, t: float, replay_id: str = ""
) -> list:
    """The body of a VALUE record: `value` logged as `name` at loop context `ctx`."""
    return [run_id, seq, name, value, ctx, t, replay_id]


def replay_id_of(body: Any) -> str:
    """The replay that stored this VALUE ("" for a value the run recorded itself)."""
    return body[REPLAY_ID] if len(body) > REPLAY_ID else ""


def outer_iteration(ctx: Any, outside: int = -1) -> int:
    """The outer loop's 0-based iteration of loop context `ctx`; `outside` when `ctx` is empty
    (a value logged outside every loop)."""
    return int(ctx[0][1]) if ctx else outside


class Resumes:
    """The RUN_RESUME records of one run, and the rule they impose: a value with a seq above a
    resume's seq and an LSN below the resume's LSN was superseded (the resumed run logged that
    seq again), and is not part of the run."""

    def __init__(self) -> None:
        self._points: list[tuple[int, int]] = []

    def add(self, lsn: int, seq: int) -> None:
        """Note a RUN_RESUME record at `lsn` resuming from `seq` (its body's `seq`)."""
        self._points.append((lsn, seq))

    def superseded(self, lsn: int, seq: int) -> bool:
        """True when the value at `lsn` with `seq` was superseded by a resume."""
        return any(seq > rseq and lsn < rlsn for rlsn, rseq in self._points)
