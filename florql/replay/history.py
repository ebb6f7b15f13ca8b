"""What a recorded run looked like, as the planner needs it: outer iterations with their timings,
checkpoint positions, and which iterations earlier replays already covered.

Built from the run's LOOP / LOOP_END / RUN_END / REPLAY_BEGIN / REPLAY_END records (never from
the VALUE records, which can be millions, except to settle a replay that never ended) and its
complete checkpoints. `from_records` is pure, so the planner's tests need no store.

>>> recs = [
...     (4, ["r1", 1, "epoch", [["epoch", 0, 1]], 10.0]),
...     (4, ["r1", 2, "step", [["epoch", 0, 1], ["step", 0, 0]], 10.0]),
...     (5, ["r1", 3, "step", [["epoch", 0, 1]], 1, 13.0]),
...     (4, ["r1", 4, "epoch", [["epoch", 1, 2]], 14.0]),
...     (5, ["r1", 5, "epoch", [], 2, 18.0]),
... ]
>>> h = from_records("r1", {"started_at": 9.0}, recs, [])
>>> h.outer, [(i.index, i.value, i.seconds, i.tail_seconds, i.inner) for i in h.iterations]
('epoch', [(0, 1, 4.0, 1.0, 1), (1, 2, 4.0, 4.0, 0)])
>>> h.setup_seconds, h.total_seconds
(1.0, 9.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from florql import schema
from florql.schema import LOOP, LOOP_END, REPLAY_BEGIN, REPLAY_END, RUN_END

AFTER_LOOP = -1  # the "iteration" of values logged after the outer loop ended


@dataclass(frozen=True)
class Iteration:
    """One outer-loop iteration: its position, the value SQL shows, and what it cost."""

    index: int
    value: Any
    seconds: float
    tail_seconds: float  # from the end of its first inner loop to its end (all of it if none)
    inner: int  # inner-loop iterations it ran


@dataclass(frozen=True)
class Checkpoint:
    ckpt_id: str
    iteration: int  # outer iteration the state belongs to
    phase: str  # "inner_end" or "iter_end"
    # Variables it could not hold that only new statements could read: {name: why}.
    unavailable: tuple[tuple[str, str], ...] = ()


@dataclass
class ReplayDone:
    """What one earlier replay of this run covered."""

    replay_id: str
    names: set[str]
    iterations: set[int]
    status: str | None  # None: it never ended (crashed)
    diverged: bool


@dataclass
class RunHistory:
    run_id: str
    meta: dict[str, Any]
    outer: str | None
    iterations: list[Iteration]
    checkpoints: dict[int, Checkpoint]
    setup_seconds: float
    total_seconds: float
    replays: list[ReplayDone] = field(default_factory=list)
    # Checkpoints left out of `checkpoints` because they miss a loop-carried variable
    # (florql/loopstate.py): iteration -> {variable: why}. Replay never restores them.
    incomplete: dict[int, dict[str, str]] = field(default_factory=dict)
    # Objects the loop changed in place whose state no checkpoint holds: {name: type}.
    uncaptured: dict[str, str] = field(default_factory=dict)

    def iteration(self, index: int) -> Iteration | None:
        return self._by_index().get(index)

    def _by_index(self) -> dict[int, Iteration]:
        return {it.index: it for it in self.iterations}

    def covered(self, name: str) -> set[int]:
        """Iterations whose values of `name` an earlier, ended replay stored."""
        return {i for r in self.replays if name in r.names for i in r.iterations}

    def diverged_replays(self, names: Iterable[str]) -> list[ReplayDone]:
        wanted = set(names)
        return [r for r in self.replays if r.diverged and r.names & wanted]


def from_records(
    run_id: str,
    meta: dict[str, Any],
    records: Iterable[tuple[int, Any]],
    checkpoints: Iterable[tuple[str, dict[str, Any]]],
    run_end: dict[str, Any] | None = None,
) -> RunHistory:
    """Summarise a run from its (kind, body) records in LSN order and (ckpt_id, meta) pairs."""
    outer: str | None = None
    starts: dict[int, tuple[Any, float]] = {}
    inner_end: dict[int, float] = {}
    inner_count: dict[int, int] = {}
    loop_done: float | None = None
    last_t = float(meta.get("started_at") or 0.0)
    begins: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    for kind, body in records:
        if kind == LOOP:
            ctx, t = body[3], float(body[4])
            last_t = max(last_t, t)
            if len(ctx) == 1:
                outer = outer or ctx[0][0]
                idx = int(ctx[0][1])
                starts[idx] = (ctx[0][2], t)
                inner_end.pop(idx, None)  # a resumed run redoes the iteration
                inner_count[idx] = 0
            elif len(ctx) >= 2:
                idx = int(ctx[0][1])
                inner_count[idx] = inner_count.get(idx, 0) + 1
        elif kind == LOOP_END:
            ctx, t = body[3], float(body[5])
            last_t = max(last_t, t)
            if len(ctx) == 1:
                inner_end.setdefault(int(ctx[0][1]), t)
            elif not ctx and body[2] == outer:
                loop_done = t
        elif kind == RUN_END and isinstance(body, dict):
            run_end = body
        elif kind == REPLAY_BEGIN:
            begins[body["replay_id"]] = body
        elif kind == REPLAY_END:
            ends[body["replay_id"]] = body
    end_t = loop_done or float((run_end or {}).get("ended_at") or last_t)
    order = sorted(starts)
    iterations = []
    for n, idx in enumerate(order):
        value, t0 = starts[idx]
        t1 = starts[order[n + 1]][1] if n + 1 < len(order) else end_t
        t1 = max(t1, t0)
        tail = t1 - inner_end[idx] if idx in inner_end else t1 - t0
        iterations.append(Iteration(idx, value, t1 - t0, max(tail, 0.0), inner_count.get(idx, 0)))
    started = float(meta.get("started_at") or (starts[order[0]][1] if order else 0.0))
    setup = (starts[order[0]][1] - started) if order else 0.0
    ended = float((run_end or {}).get("ended_at") or end_t)
    incomplete: dict[int, dict[str, str]] = {}
    uncaptured: dict[str, str] = {}
    return RunHistory(
        run_id=run_id,
        meta=meta,
        outer=outer,
        iterations=iterations,
        checkpoints=_checkpoints(checkpoints, incomplete, uncaptured),
        setup_seconds=max(setup, 0.0),
        total_seconds=max(ended - started, 0.0),
        replays=_replays(begins, ends),
        incomplete=incomplete,
        uncaptured=uncaptured,
    )


def _checkpoints(
    items: Iterable[tuple[str, dict[str, Any]]],
    incomplete: dict[int, dict[str, str]],
    uncaptured: dict[str, str],
) -> dict[int, Checkpoint]:
    """The usable checkpoints by iteration; fills `incomplete` and `uncaptured` (see
    RunHistory) from the others' metadata."""
    out: dict[int, Checkpoint] = {}
    for ckpt_id, meta in items:
        ctx = meta.get("ctx") or []
        if not ctx:
            continue
        idx = int(ctx[0][1])
        uncaptured.update(meta.get("uncaptured") or {})
        if meta.get("incomplete"):
            incomplete[idx] = dict(meta["incomplete"])
            out.pop(idx, None)
            continue
        incomplete.pop(idx, None)
        missing = tuple(sorted((meta.get("unavailable") or {}).items()))
        ck = Checkpoint(ckpt_id, idx, str(meta.get("phase", "inner_end")), missing)
        # Several at one iteration (a resumed run): the later one wins, as the log does.
        out[idx] = ck
    return out


def drop_unavailable(h: RunHistory, reads: set[str]) -> None:
    """Take out of `h.checkpoints` those that miss a variable the new statements read
    (recorded in `h.incomplete` with why): restoring them would hand the statement a stale
    value (invariant 7)."""
    for idx, ck in list(h.checkpoints.items()):
        missing = {n: why for n, why in ck.unavailable if n in reads}
        if missing:
            h.incomplete[idx] = missing
            del h.checkpoints[idx]


def _replays(
    begins: dict[str, dict[str, Any]], ends: dict[str, dict[str, Any]]
) -> list[ReplayDone]:
    out = []
    for rid, b in begins.items():
        e = ends.get(rid)
        fid = (e or {}).get("fidelity") or {}
        diverged = bool(fid) and fid.get("matched", 0) < fid.get("checked", 0)
        done = (e or {}).get("iterations", b.get("iterations", []))
        out.append(
            ReplayDone(
                replay_id=rid,
                names=set(b.get("names", [])),
                iterations={int(i) for i in done} if e is not None else set(),
                status=None if e is None else str(e.get("status")),
                diverged=diverged,
            )
        )
    return out


def settle_unfinished(history: RunHistory, values: Iterable[list[Any]]) -> None:
    """Credit replays that never ended with the iterations they did store.

    Workers append each iteration atomically, so a value with that replay_id at an iteration
    means the whole iteration is there. `values` are VALUE bodies of the run.
    """
    open_ids = {r.replay_id: r for r in history.replays if r.status is None}
    if not open_ids:
        return
    for body in values:
        r = open_ids.get(schema.replay_id_of(body))
        if r is not None:
            r.iterations.add(schema.outer_iteration(body[schema.CTX], AFTER_LOOP))
