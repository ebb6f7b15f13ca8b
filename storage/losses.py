"""Which runs lost which records to damage.

A lost range of LSNs cannot say whose records it held: its bytes are gone. The records around
it can: every record of a run carries the run's `seq`, a counter the recording session assigns
in order and hands to the log in that order (docs/INTERFACES.md §2). A run whose seq jumps
from a to b across a lost range lost exactly its records a+1 .. b-1 there. A run with no
RUN_END whose last record precedes a lost range may have lost its end there.

Replayed values (a non-empty replay_id) and RUN_RESUME (which restarts the counter at its
checkpoint's seq) do not count as jumps.

>>> from florql_storage.records import Lost
>>> recs = [(1, 1, {"run_id": "r"}), (2, 3, ["r", 1, "x", 1, [], 0.0, ""]),
...         (9, 3, ["r", 8, "x", 1, [], 0.0, ""])]
>>> [(lost.first_lsn, hit) for lost, hit in attribute(recs, [Lost(3, 8, "s", 0, "bad")], {})]
[(3, {'r': 'seq 2-7 (6 records)'})]
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from . import kinds as K
from .records import Lost
from .state import run_of

_SEQ_LIST = frozenset({K.VALUE, K.LOOP, K.LOOP_END})
_SEQ_DICT = frozenset({K.RNG, K.STATE})


def runs_hit(store, lost: list[Lost]) -> list[tuple[Lost, dict[str, str]]]:
    """For each lost range, {run_id: what it lost there}, from a scan of what `store` reads."""

    records = ((r.lsn, r.kind, r.body) for r in store.scan())
    ends = {rid: info.end is not None for rid, info in store.runs().items()}
    return attribute(records, lost, ends)


def attribute(
    records: Iterable[tuple[int, int, object]], lost: list[Lost], ended: dict[str, bool]
) -> list[tuple[Lost, dict[str, str]]]:
    """`runs_hit` on (lsn, kind, body) triples in LSN order; `ended`: run -> has a RUN_END."""
    ranges = sorted((x for x in lost if not x.empty), key=lambda x: x.first_lsn)
    firsts = [x.first_lsn for x in ranges]
    hits: dict[int, dict[str, str]] = {i: {} for i in range(len(ranges))}
    prev: dict[str, tuple[int, int]] = {}
    for lsn, kind, body in records:
        rid = run_of(kind, body)
        if rid is None:
            continue
        if kind == K.RUN_BEGIN:
            prev[rid] = (lsn, 0)
            continue
        if kind == K.RUN_RESUME and isinstance(body, dict):
            prev[rid] = (lsn, int(body.get("seq") or 0))
            continue
        seq = _seq(kind, body)
        if seq is None:
            continue
        plsn, pseq = prev.get(rid, (0, 0))
        if seq > pseq + 1:
            for i in _between(firsts, ranges, plsn, lsn):
                n = seq - pseq - 1
                hits[i][rid] = f"seq {pseq + 1}-{seq - 1} ({n} record{'s' * (n != 1)})"
        prev[rid] = (lsn, max(seq, pseq))
    for rid, (plsn, _pseq) in prev.items():
        if not ended.get(rid, False):
            after = bisect.bisect_right(firsts, plsn)
            if after < len(ranges):
                hits[after].setdefault(rid, "possibly its last records and its end")
    return [(ranges[i], hits[i]) for i in range(len(ranges))]


def _seq(kind: int, body) -> int | None:
    if kind in _SEQ_LIST and isinstance(body, (list, tuple)) and len(body) > 1:
        if kind == K.VALUE and (len(body) < 7 or body[6]):
            return None  # a replayed value: its seq follows the replay, not the recording
        return body[1] if type(body[1]) is int else None
    if kind in _SEQ_DICT and isinstance(body, dict):
        seq = body.get("seq")
        return seq if type(seq) is int else None
    return None


def _between(firsts: list[int], ranges: list[Lost], after: int, before: int) -> list[int]:
    """Indexes of the lost ranges lying between LSNs `after` and `before`."""
    out = []
    i = bisect.bisect_right(firsts, after)
    while i < len(ranges) and ranges[i].first_lsn < before:
        out.append(i)
        i += 1
    return out
