"""A session in replay mode: executes one replay task (docs/INTERFACES.md §3).

The script runs with the recorded args. The outer loop yields only the iterations named in the
task's steps. For `skip_inner` and `silent_tail` the first inner loop of the iteration restores
the step's checkpoint (registered objects, RNG, script variables) and yields nothing; `execute`
runs the iteration in full from the state the previous step left. After the last step the
script is stopped (`runner.StopScript`) unless `run_to_end`.

What is logged: values of `new_names` become VALUE records carrying the task's replay_id, one
atomic frame per outer iteration; values of `check_names` are compared with the recorded values
at the same loop context, in order (fidelity); everything else is dropped. A `silent_tail`
iteration logs nothing. Values logged before the outer loop are kept only when the task starts
at iteration 0 with `execute`, after it only with `run_to_end`, so that parallel workers never
write them twice. Nothing else is written: no RUN_BEGIN/RUN_END, no checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from florql import capture
from florql.errors import BadInputError
from florql.replay.messages import ReplayTask, TaskResult
from florql.runner import StopScript
from florql.schema import NAME, RNG, RUN_ID, RUN_RESUME, SEQ, VALUE, Resumes, value_body
from florql.session import Session, _Loop
from florql.values import to_loggable

if TYPE_CHECKING:
    from florql_storage import Store


class ReplaySession(Session):
    muted = True  # no LOOP/RNG/STATE records, no checkpoints

    def __init__(self, task: ReplayTask) -> None:
        super().__init__(task.store, script=os.path.abspath(task.script), argv=task.argv)
        self.task = task
        self.run_id = task.run_id
        self.replay_id = task.replay_id
        self.overrides = dict(task.args)
        self.steps = {int(s["iteration"]): s for s in task.steps}
        self.last_step = max(self.steps) if self.steps else -1
        self.new_names = set(task.new_names)
        self.check_names = set(task.check_names)
        self.tolerance = task.tolerance
        self.run_to_end = task.run_to_end
        first = min(self.steps) if self.steps else None
        self._keep_pre = first == 0 and self.steps[0]["action"] == "execute"
        self._phase = "pre"  # pre -> loop -> post
        self._action: str | None = None
        self._iteration = -1
        self._pending: Any = None  # checkpoint to restore at the first inner loop
        self._frame_buf: list = []
        self._ckpts: dict[str, Any] = {}
        self._recorded: dict[tuple, list] = {}
        self._seen: dict[tuple, int] = {}
        self._new_seen: dict[tuple, int] = {}
        # Values of the new names stored already (an earlier replay, or the run itself): never
        # written twice, and never replaced by a different one (invariant 7).
        self._stored: dict[tuple, list] = {}
        self.compared = 0  # values of new names found stored already (compared, not written)
        self.conflicts = 0  # ... that differed
        self.executed: list[int] = []
        self.written = 0
        self.checked = 0
        self.matched = 0
        self.first_mismatch: dict[str, Any] | None = None
        self.warnings: list[str] = []

    def start(self) -> None:
        from florql_storage import Store

        self.store = Store.open(self.store_path, create=False)
        self.writer = self.store.writer()
        runs = self.store.runs()
        if self.run_id not in runs:
            raise BadInputError(f"run {self.run_id} is not in store {self.store_path}")
        self.run_info = runs[self.run_id]
        self._ckpts = {c.ckpt_id: c for c in self.store.checkpoints(self.run_id)}
        self._recorded, self._stored, self._rng = _read_run(
            self.store, self.run_id, self.check_names, self.new_names
        )
        start = (self.run_info.meta or {}).get("rng")
        if start:  # before the script's first line, as recorded: unseeded draws repeat
            capture.restore_rng(start)

    def extra_path(self) -> list[str]:
        """The recorded script's folder, so the spliced copy finds the run's local modules."""
        script = (self.run_info.meta or {}).get("script")
        return [os.path.dirname(script)] if script else []

    # --- hooks -------------------------------------------------------------------------------

    def outer_wants(self, iteration: int, frame: FrameType) -> bool:
        self._phase = "loop"
        step = self.steps.get(iteration)
        if step is None:
            if iteration > self.last_step and not self.run_to_end:
                raise StopScript()
            return False
        self._action = step["action"]
        if iteration in self._rng:  # the state the recorded iteration started with
            capture.restore_rng(self._rng[iteration])
        if self._action == "execute":
            if not self.executed and iteration != 0:
                raise BadInputError(
                    f"replay step execute at iteration {iteration} comes first; an execute step "
                    "needs the state a previous step left (silent_tail of the iteration before), "
                    "or iteration 0"
                )
            return self._run(iteration)
        ckpt = self._checkpoint(step.get("checkpoint"))
        if ckpt.meta.get("phase") == "iter_end":
            # The checkpoint is the state at the end of this iteration: nothing left to run.
            self.restore(ckpt, None)
            self.executed.append(iteration)
            if iteration == self.last_step and not self.run_to_end:
                raise StopScript()
            return False
        self._pending = ckpt
        return self._run(iteration)

    def _run(self, iteration: int) -> bool:
        self.executed.append(iteration)
        self._iteration = iteration
        return True

    def rest_of_iteration_unneeded(self) -> bool:
        """After the last new statement of a `skip_inner` iteration: is the rest needed?

        No when the next iteration that runs restores its own checkpoint (or nothing runs
        after this one and the script stops here): its state comes from that checkpoint, not
        from what the rest of this iteration would compute.
        """
        if self._phase != "loop" or self._action != "skip_inner":
            return False
        it = self._iteration
        if it == self.last_step:
            return not self.run_to_end
        following = self.steps.get(it + 1)
        return following is None or following["action"] != "execute"

    def outer_begin(self, lp: _Loop) -> None:
        pass

    def inner_start(self, outer: _Loop, frame: FrameType) -> bool:
        ckpt, self._pending = self._pending, None
        if ckpt is None:
            return False
        self.restore(ckpt, frame)
        return True

    def inner_end(self, outer: _Loop, frame: FrameType, closed: bool = False) -> None:
        pass

    def outer_end(self, lp: _Loop, frame: FrameType) -> None:
        self._commit()
        if lp.iteration == self.last_step and not self.run_to_end:
            raise StopScript()

    def outer_done(self) -> None:
        # Not committed here: this also runs when an exception unwinds through the loop (the
        # generator is closed), and that iteration's values must not become visible. `finish`
        # commits what is left (a `break`-ended iteration, values after the loop) only if the
        # script did not fail.
        self._phase = "post"
        self._action = None

    # --- logging -----------------------------------------------------------------------------

    def log(self, name: str, value: Any) -> Any:
        v = to_loggable(name, value)
        if not self._keeps():
            return value
        if name in self.new_names and not self._already_stored(name, v):
            seq = next(self._counter)
            self._frame_buf.append(
                (
                    VALUE,
                    value_body(self.run_id, seq, name, v, self._ctx, time.time(), self.replay_id),
                )
            )
        if name in self.check_names:
            self._check(name, v)
        return value

    def _already_stored(self, name: str, value: Any) -> bool:
        """Whether the store holds this value's slot (same name, context and order) already;
        a different stored value stays, and the difference is reported."""
        key = (name, _ctx_key(self._ctx))
        j = self._new_seen.get(key, 0)
        self._new_seen[key] = j + 1
        stored = self._stored.get(key, [])
        if j >= len(stored):
            return False
        self.compared += 1
        if not _same(stored[j], value, self.tolerance):
            self.conflicts += 1
            if self.conflicts == 1:
                where = ", ".join(f"{c[0]}={c[2]}" for c in self._ctx) or "after the loop"
                self.warnings.append(
                    f"{name} at {where}: recomputed {value!r}, but the store holds {stored[j]!r} "
                    "from an earlier replay or the recording; the stored value is kept"
                )
        return True

    def _keeps(self) -> bool:
        if self._phase == "pre":
            return self._keep_pre
        if self._phase == "post":
            return self.run_to_end
        return self._action in ("execute", "skip_inner")

    def _check(self, name: str, value: Any) -> None:
        key = (name, _ctx_key(self._ctx))
        j = self._seen.get(key, 0)
        self._seen[key] = j + 1
        recorded = self._recorded.get(key, [])
        if j >= len(recorded):
            return  # nothing recorded here to compare with
        self.checked += 1
        if _same(recorded[j], value, self.tolerance):
            self.matched += 1
        elif self.first_mismatch is None:
            self.first_mismatch = {
                "name": name,
                "ctx": [list(c) for c in self._ctx],
                "recorded": recorded[j],
                "replayed": value,
            }

    def _commit(self) -> None:
        if self._frame_buf:
            entries, self._frame_buf = self._frame_buf, []
            self.writer.append_many(entries, atomic=True)
            self.writer.flush()
            self.written += len(entries)

    def _checkpoint(self, ckpt_id: Any) -> Any:
        if ckpt_id not in self._ckpts:
            raise BadInputError(f"checkpoint {ckpt_id!r} of run {self.run_id} does not exist")
        return self._ckpts[ckpt_id]

    def finish(self, error: str | None) -> TaskResult:
        """Write what is left, close the store, and return the task's result.

        After an error the buffered values belong to an iteration that did not finish: they
        are dropped, so a failed replay never leaves a partial iteration visible.
        """
        if error:
            self._frame_buf = []
        self._commit()
        self.writer.close()
        self.store.close()
        return TaskResult(
            replay_id=self.replay_id,
            executed=self.executed,
            inner_iterations=self.inner_iterations,
            values=self.written,
            compared=self.compared,
            conflicts=self.conflicts,
            fidelity={
                "checked": self.checked,
                "matched": self.matched,
                "first_mismatch": self.first_mismatch,
            },
            warnings=self.warnings,
            error=error or None,
        )


def _ctx_key(ctx: Any) -> tuple:
    return tuple((c[0], c[1]) for c in ctx)


def _same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a == b or math.isclose(a, b, rel_tol=tol, abs_tol=tol)
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def _read_run(
    store: Store, run_id: str, check: set[str], new: set[str]
) -> tuple[dict[tuple, list], dict[tuple, list], dict[int, dict[str, Any]]]:
    """One pass over the run's records: the recorded values of `check` and the stored
    (recorded or replayed) values of `new`, both by (name, ctx) in seq order minus the values
    a resume superseded; and the RNG states at the start of each outer iteration (a resumed
    run's last)."""
    rows = []
    resumes = Resumes()
    rng: dict[int, dict[str, Any]] = {}
    wanted = check | new
    for rec in store.scan(kinds=[VALUE, RUN_RESUME, RNG], run_id=run_id):
        body = rec.body
        if rec.kind == RNG:
            ctx = body.get("ctx") or []
            if body.get("run_id") == run_id and len(ctx) == 1:
                rng[int(ctx[0][1])] = body["states"]
        elif rec.kind == RUN_RESUME:
            resumes.add(rec.lsn, body["seq"])
        elif body[RUN_ID] == run_id and body[NAME] in wanted:
            rows.append((rec.lsn, body))
    recorded: dict[tuple, list] = {}
    stored: dict[tuple, list] = {}
    for lsn, (_rid, seq, name, value, ctx, _t, replay_id) in sorted(rows, key=lambda r: r[1][SEQ]):
        if resumes.superseded(lsn, seq):
            continue
        key = (name, _ctx_key(ctx))
        if name in check and not replay_id:
            recorded.setdefault(key, []).append(value)
        if name in new:
            stored.setdefault(key, []).append(value)
    return recorded, stored, rng
