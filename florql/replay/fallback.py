"""Planning around damaged checkpoints: a replay never starts from a checkpoint that cannot be
read; it falls back to the previous complete one, and says so.

The planner is pure (no store), so this wraps it: plan, verify the pages of every checkpoint the
plan restores (`Store.verify_checkpoint`), drop the damaged ones from the run histories, plan
again; until the plan uses only intact checkpoints. Each checkpoint is verified once. Dropping
a checkpoint is exactly the planner's "no checkpoint here" case: a `skip_inner` at that
iteration becomes a re-execution from the checkpoint before it (or from the start).

>>> from florql.replay.history import Checkpoint, Iteration, RunHistory
>>> its = [Iteration(i, i, 1.0, 0.5, 10) for i in range(3)]
>>> h = RunHistory("r1", {}, "epoch", its, {i: Checkpoint(f"c{i}", i, "inner_end") for i in range(3)}, 0.0, 3.0)
>>> class Store:
...     def verify_checkpoint(self, ckpt_id):
...         return "page_checksum in p.pg at offset 40" if ckpt_id == "c2" else None
>>> plan, notes = plan_around_damage(Store(), [(h, {"w"}, "outer", set())], lambda r, c: c.get("epoch") == 2, 1)
>>> [(s.iteration, s.action, s.checkpoint) for s in plan.tasks[0].steps]
[(1, 'silent_tail', 'c1'), (2, 'execute', None)]
>>> print(notes[0])
checkpoint c2 of run r1 (iteration 2) is damaged (page_checksum in p.pg at offset 40): replay falls back to the previous complete checkpoint (iteration 1); `florql check --repair` drops it for good
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from florql.replay import planner
from florql.replay.history import RunHistory

if TYPE_CHECKING:
    from florql_storage import Store


def plan_around_damage(
    store: Store,
    wants: Iterable[tuple[RunHistory, set[str], str, set[int]]],
    admits: Callable[[str, dict[str, Any]], bool],
    workers: int,
    verify: int = 0,
) -> tuple[planner.Plan, list[str]]:
    """`planner.plan_runs` using only checkpoints whose pages verify; (plan, warnings)."""
    wants = list(wants)
    histories = {h.run_id: h for h, *_ in wants}
    verdict: dict[str, str | None] = {}
    notes: list[str] = []
    while True:
        plan = planner.plan_runs(wants, admits, workers, verify)
        damaged = [
            (run.run_id, ck)
            for run in plan.runs
            for ck in run.checkpoints_used
            if _damage(store, ck, verdict) is not None
        ]
        if not damaged:
            return plan, notes
        for run_id, ck in damaged:
            notes.append(_drop(histories[run_id], ck, str(verdict[ck])))


def _damage(store: Store, ckpt_id: str, verdict: dict[str, str | None]) -> str | None:
    if ckpt_id not in verdict:
        problem = store.verify_checkpoint(ckpt_id)
        verdict[ckpt_id] = None if problem is None else _reason(problem)
    return verdict[ckpt_id]


def _reason(problem: Any) -> str:
    kind = getattr(problem, "kind", None)
    if kind is None:
        return str(problem)
    return f"{kind} in {problem.segment} at offset {problem.offset}"


def _drop(h: RunHistory, ckpt_id: str, reason: str) -> str:
    """Forget a damaged checkpoint in `h`; the warning that says what replay does instead."""
    at = next(i for i, c in h.checkpoints.items() if c.ckpt_id == ckpt_id)
    del h.checkpoints[at]
    before = [i for i in h.checkpoints if i < at]
    instead = (
        f"the previous complete checkpoint (iteration {max(before)})"
        if before
        else "the start of training"
    )
    return (
        f"checkpoint {ckpt_id} of run {h.run_id} (iteration {at}) is damaged ({reason}): replay "
        f"falls back to {instead}; `florql check --repair` drops it for good"
    )
