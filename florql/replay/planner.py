"""Planning the least replay work that answers a request (pure: no store, no processes).

Per run, the outer iterations to produce are those the query's selection admits
(`selection.admits(run_id, {outer_loop: value})`) minus those earlier replays covered. How to
produce iteration k depends on where the new statements sit (`Placement`):

- `outer` (in the outer loop's body after its first inner loop): restore k's `inner_end`
  checkpoint and skip the inner loop (`skip_inner k`). Without that checkpoint, fall back to
  re-execution as below.
- `execute` (inside the inner loop, before it, or not known statically): restore the state at
  the start of k and run k whole. That state is the `silent_tail` of the nearest checkpoint at
  an iteration j < k, followed by executing j+1..k-1 (they log the new names too); with no
  checkpoint before k, replay runs from the script's start (a warning says so).
- `after` (after the outer loop): reach the end of the last iteration like `execute` reaches a
  start, then run the script to its end.

Work is cut into *pieces* that each start from their own checkpoint, so they are independent;
consecutive pieces are grouped into at most `workers` tasks per run by estimated cost (a piece
that continues where the previous one in its task stopped drops its restore). Estimates come from
the recorded iteration timings: `execute k` costs k's duration, `skip_inner`/`silent_tail` cost
k's tail after its inner loop, each task pays the run's set-up time once.

>>> from florql.replay.history import Checkpoint, Iteration, RunHistory
>>> its = [Iteration(i, i + 1, 10.0, 0.5, 100) for i in range(4)]
>>> cks = {i: Checkpoint(f"c{i}", i, "inner_end") for i in range(4)}
>>> h = RunHistory("r1", {}, "epoch", its, cks, setup_seconds=1.0, total_seconds=41.0)
>>> p = plan_runs([(h, {"loss2"}, "outer", set())], lambda run, ctx: ctx.get("epoch", 0) > 2, 1)
>>> [(s.iteration, s.action, s.checkpoint) for s in p.tasks[0].steps]
[(2, 'skip_inner', 'c2'), (3, 'skip_inner', 'c3')]
>>> p = plan_runs([(h, {"g"}, "execute", set())], lambda run, ctx: ctx.get("epoch", 0) > 2, 1)
>>> [(s.iteration, s.action, s.checkpoint) for s in p.tasks[0].steps]
[(1, 'silent_tail', 'c1'), (2, 'execute', None), (3, 'execute', None)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from florql.replay.history import AFTER_LOOP, Checkpoint, RunHistory

# Start of a worker before the script's first line: a fresh interpreter importing torch (and
# the `torch._dynamo` that torch.optim pulls in), or a fork of a running warm server.
TASK_STARTUP_SECONDS = 4.0  # measured on 2 cores: 2-2.8 s torch, 1.5-2 s torch._dynamo
WARM_STARTUP_SECONDS = 0.05
RESTORE_SECONDS = 0.05  # loading a small checkpoint; the tail time dominates

Admits = Callable[[str, dict[str, Any]], bool]


@dataclass(frozen=True)
class Step:
    iteration: int
    action: str  # "execute" | "skip_inner" | "silent_tail"
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"iteration": self.iteration, "action": self.action}
        if self.checkpoint is not None:
            d["checkpoint"] = self.checkpoint
        return d


@dataclass
class Piece:
    """Work that starts from its own checkpoint (or from the start) and runs `steps` in order."""

    steps: list[Step]
    cost: float

    @property
    def first(self) -> int:
        return self.steps[0].iteration

    @property
    def last(self) -> int:
        return self.steps[-1].iteration


@dataclass
class Task:
    """One worker's job: one run, steps in iteration order (INTERFACES §3)."""

    run_id: str
    steps: list[Step]
    run_to_end: bool
    cost: float  # the work after the script reaches its loop
    setup: float = 0.0  # the run's recorded set-up before its loop (`time_to_loop`)

    @property
    def produces(self) -> list[int]:
        """Iterations whose new values this task stores."""
        out = [s.iteration for s in self.steps if s.action != "silent_tail"]
        return [*out, AFTER_LOOP] if self.run_to_end else out


@dataclass
class RunPlan:
    run_id: str
    placement: str
    names: set[str]
    selected: list[int]  # iterations the selection admits that are not yet covered
    tasks: list[Task] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    history: RunHistory | None = None

    @property
    def checkpoints_used(self) -> list[str]:
        return sorted({s.checkpoint for t in self.tasks for s in t.steps if s.checkpoint})

    @property
    def executed(self) -> list[int]:
        return sorted({s.iteration for t in self.tasks for s in t.steps if s.action == "execute"})

    @property
    def inner_iterations(self) -> int:
        h = self.history
        if h is None:
            return 0
        return sum((it.inner if (it := h.iteration(i)) else 0) for i in self.executed)


@dataclass
class Plan:
    runs: list[RunPlan]
    workers: int
    warm: bool = False  # workers will be forks of a running warm server

    @property
    def tasks(self) -> list[Task]:
        return [t for r in self.runs for t in r.tasks]

    @property
    def warnings(self) -> list[str]:
        return [w for r in self.runs for w in r.warnings]

    def estimate_seconds(self) -> float:
        """Wall time with `workers` processes: tasks assigned greedily, longest first, each
        also paying the time until its script reaches the loop."""
        loads = [0.0] * max(self.workers, 1)
        for t in sorted(self.tasks, key=lambda t: -t.cost):
            i = loads.index(min(loads))
            loads[i] += t.cost + time_to_loop(t.setup, self.warm)
        return max(loads) if self.tasks else 0.0


def time_to_loop(setup: float, warm: bool) -> float:
    """Seconds from a worker's start until the script reaches its loop, given the set-up the
    recording measured. That set-up usually already includes importing torch (`florql record`
    starts the clock before the script's imports) and `torch._dynamo` (the first optimizer
    imports it): a fresh worker pays at least its own start, a warm one skips those imports.

    >>> time_to_loop(4.8, warm=False), round(time_to_loop(4.8, warm=True), 2)
    (4.8, 0.85)
    >>> time_to_loop(0.5, warm=False), time_to_loop(0.5, warm=True)
    (4.0, 0.05)
    """
    if warm:
        return WARM_STARTUP_SECONDS + max(0.0, setup - TASK_STARTUP_SECONDS)
    return max(TASK_STARTUP_SECONDS, setup)


def plan_runs(
    wants: Iterable[tuple[RunHistory, set[str], str, set[int]]],
    admits: Admits,
    workers: int,
    verify: int = 0,
) -> Plan:
    """Plan replay for each (history, names, placement, iterations already covered).

    Args:
        wants: per run, what to produce and where the new statements sit ("outer", "execute",
            "after").
        admits: `selection.admits`.
        workers: processes available; a run's work is split into at most this many tasks.
        verify: plan only this many of each run's admitted iterations, covered or not, to be
            re-executed in full (`florql query --verify`): a check of what is stored.
    """
    runs = [
        _plan_run(h, names, placement, done, admits, workers, verify)
        for h, names, placement, done in wants
    ]
    return Plan([r for r in runs if r.selected or r.warnings], workers)


def _plan_run(
    h: RunHistory,
    names: set[str],
    placement: str,
    done: set[int],
    admits: Admits,
    workers: int,
    verify: int = 0,
) -> RunPlan:
    plan = RunPlan(h.run_id, placement, names, [], history=h)
    if h.outer is None or not h.iterations:
        plan.warnings.append(
            f"run {h.run_id} recorded no florql.loop iterations; nothing to replay"
        )
        return plan
    if placement == "after":
        if AFTER_LOOP not in done and admits(h.run_id, {}):
            plan.selected = [AFTER_LOOP]
            plan.tasks = [_after_loop_task(h, plan)]
        return plan
    plan.selected = [
        it.index
        for it in h.iterations
        if it.index not in done and admits(h.run_id, {h.outer: it.value})
    ]
    if verify:
        plan.selected = _sample(plan.selected, verify)
    pieces = _pieces(h, plan, placement)
    plan.tasks = _group(h, pieces, workers)
    plan.warnings += _state_warnings(h, plan)
    return plan


def _state_warnings(h: RunHistory, plan: RunPlan) -> list[str]:
    """What the run's checkpoints could not hold, where it matters to this plan (invariant 7):
    incomplete checkpoints are never restored, so the replay starts earlier."""
    out = []
    if h.incomplete and plan.tasks:
        names: dict[str, str] = {}
        for why in h.incomplete.values():
            names.update(why)
        listed = "; ".join(f"{n}: {w}" for n, w in sorted(names.items()))
        out.append(
            f"run {h.run_id}: {len(h.incomplete)} checkpoint(s) cannot restore a loop-carried "
            f"variable ({listed}); replay re-executes from the nearest complete checkpoint or "
            "the start instead"
        )
    if h.uncaptured and plan.tasks:
        listed = ", ".join(f"{n} ({t})" for n, t in sorted(h.uncaptured.items()))
        out.append(
            f"run {h.run_id}: objects the loop changes whose state checkpoints cannot hold, "
            f"assumed not to affect logged values: {listed}"
        )
    return out


def _sample(selected: list[int], n: int) -> list[int]:
    """`n` iterations spread over `selected`, the last one included (it has the most history
    behind it).

    >>> _sample(list(range(10)), 2), _sample([3], 2)
    ([4, 9], [3])
    """
    if len(selected) <= n:
        return selected
    picks = {selected[len(selected) - 1 - (len(selected) * i) // n] for i in range(n)}
    return sorted(picks)


def _pieces(h: RunHistory, plan: RunPlan, placement: str) -> list[Piece]:
    """Independent pieces of work covering the selected iterations, in iteration order."""
    pieces: list[Piece] = []
    for k in plan.selected:
        ck = h.checkpoints.get(k)
        if placement == "outer" and ck is not None and ck.phase == "inner_end":
            pieces.append(Piece([Step(k, "skip_inner", ck.ckpt_id)], _tail(h, k) + RESTORE_SECONDS))
            continue
        start = _start_checkpoint(h, k)
        prev = pieces[-1] if pieces else None
        if prev is not None and (start is None or start.iteration < prev.last):
            # Continuing the previous piece is cheaper than restoring an older checkpoint.
            for j in _indices_between(h, prev.last + 1, k):
                prev.steps.append(Step(j, "execute"))
                prev.cost += _seconds(h, j)
            continue
        pieces.append(_reach_and_execute(h, plan, k))
    return pieces


def _start_checkpoint(h: RunHistory, k: int) -> Checkpoint | None:
    """The latest checkpoint at an iteration before k: its silent tail is the start of j+1."""
    before = [j for j in h.checkpoints if j < k]
    return h.checkpoints[max(before)] if before else None


def _reach_and_execute(h: RunHistory, plan: RunPlan, k: int) -> Piece:
    """Restore the nearest checkpoint before k (or start over), then execute up to k."""
    ck = _start_checkpoint(h, k)
    steps: list[Step] = []
    cost = 0.0
    if ck is None:
        first = h.iterations[0].index
        # Iteration 0 always starts from the start; later ones warn: replay costs more there.
        # (Incomplete checkpoints have a warning of their own, `_state_warnings`.)
        late = k > first and not h.incomplete
        if late and not any(w.startswith("no checkpoint") for w in plan.warnings):
            plan.warnings.append(
                f"no checkpoint before iteration {k} of run {h.run_id}: replaying from the "
                "start of training (record with a larger --overhead budget for faster replay)"
            )
    else:
        steps.append(Step(ck.iteration, "silent_tail", ck.ckpt_id))
        cost += _tail(h, ck.iteration) + RESTORE_SECONDS
        first = ck.iteration + 1
    for j in _indices_between(h, first, k):
        steps.append(Step(j, "execute"))
        cost += _seconds(h, j)
    return Piece(steps, cost)


def _after_loop_task(h: RunHistory, plan: RunPlan) -> Task:
    last = h.iterations[-1].index
    ck = h.checkpoints.get(last)
    if ck is not None:
        steps, cost = [Step(last, "silent_tail", ck.ckpt_id)], _tail(h, last) + RESTORE_SECONDS
    else:
        piece = _reach_and_execute(h, plan, last)
        steps, cost = piece.steps, piece.cost
    return Task(h.run_id, steps, True, cost, h.setup_seconds)


def _group(h: RunHistory, pieces: list[Piece], workers: int) -> list[Task]:
    """Consecutive pieces into at most `workers` tasks of similar estimated cost."""
    if not pieces:
        return []
    total = sum(p.cost for p in pieces)
    target = total / max(1, min(workers, len(pieces)))
    groups: list[list[Piece]] = [[]]
    acc = 0.0
    for p in pieces:
        if groups[-1] and acc + p.cost / 2 > target and len(groups) < workers:
            groups.append([])
            acc = 0.0
        groups[-1].append(p)
        acc += p.cost
    return [_merge(h, g) for g in groups]


def _merge(h: RunHistory, group: list[Piece]) -> Task:
    steps: list[Step] = []
    cost = 0.0
    for p in group:
        own, extra = list(p.steps), p.cost
        # A restore that only reaches where the previous step left off is dropped.
        if (
            steps
            and len(own) > 1
            and own[0].action == "silent_tail"
            and steps[-1].action in ("execute", "skip_inner")
            and steps[-1].iteration == own[0].iteration
        ):
            own = own[1:]
            extra -= _tail(h, p.first) + RESTORE_SECONDS
        steps.extend(own)
        cost += extra
    return Task(h.run_id, steps, False, cost, h.setup_seconds)


def _indices_between(h: RunHistory, first: int, last: int) -> list[int]:
    return [it.index for it in h.iterations if first <= it.index <= last]


def _seconds(h: RunHistory, k: int) -> float:
    it = h.iteration(k)
    return it.seconds if it else 0.0


def _tail(h: RunHistory, k: int) -> float:
    it = h.iteration(k)
    return it.tail_seconds if it else 0.0
