"""`florql record --resume RUN`: continue a crashed run from its last complete checkpoint.

The recorded script runs again (recorded path, cwd, argv and args). Until the restore point the
session is muted: pre-loop code runs but records nothing, and the outer loop does not execute the
iterations before the checkpoint's iteration k. In iteration k the first inner loop restores the
checkpoint (objects, RNG, script variables) and is skipped; from there the run records again, its
`seq` counter continuing from the checkpoint's, so every record after the restore point gets the
seq it had in an uninterrupted run. A RUN_RESUME record (seq of the checkpoint) tells readers to
hide the crashed attempt's records with a higher seq. An `iter_end` checkpoint restores at the
start of iteration k+1 instead. With no checkpoint the run restarts from the beginning (seq 0).
"""

from __future__ import annotations

import os
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from florql import capture
from florql.errors import BadInputError
from florql.session import Session, _Loop

if TYPE_CHECKING:
    from florql_storage import Store


class ResumeSession(Session):
    """Records the continuation of crashed run `run` from checkpoint `ckpt` (None: restart)."""

    resumed = True

    def __init__(self, store_path: str, run: Any, ckpt: Any, command: str | None = None) -> None:
        meta = run.meta or {}
        super().__init__(
            store_path,
            script=meta["script"],
            argv=list(meta.get("argv") or [meta["script"]]),
            overrides=dict(meta.get("args") or {}),
            overhead=(meta.get("overhead") if isinstance(meta.get("overhead"), float) else None),
            command=command,
        )
        self.run_id = run.run_id
        self.recorded = meta
        self.ckpt = ckpt
        self.target = ckpt.meta["ctx"][0][1] if ckpt is not None else None
        self.phase = ckpt.meta.get("phase") if ckpt is not None else None
        self.muted = ckpt is not None

    def _begin_locked(self) -> None:
        if self._begun:
            return
        seq = self.ckpt.meta["seq"] if self.ckpt is not None else 0
        body = {
            "run_id": self.run_id,
            "seq": seq,
            "ckpt_id": self.ckpt.ckpt_id if self.ckpt is not None else None,
            "resumed_at": time.time(),
            "pid": os.getpid(),
        }
        self.writer.resume_run(self.run_id, body)
        self._begun = True

    def start(self) -> None:
        super().start()
        self._begin()  # take the run's lock before anything runs
        if self.recorded.get("rng"):  # unseeded draws before the loop repeat (a data split)
            capture.restore_rng(self.recorded["rng"])
            self.rng_start = self.recorded["rng"]

    def outer_wants(self, iteration: int, frame: FrameType) -> bool:
        if not self.muted or self.target is None:
            return True
        if iteration < self.target:
            return False
        if self.phase == "iter_end":
            # The checkpoint is the state at the end of iteration k: continue at k + 1.
            if iteration == self.target:
                return False
            self._restore_here(None)
        return True

    def outer_done(self) -> None:
        if self.muted and self.phase == "iter_end":
            self._restore_here(None)  # k was the last iteration

    def inner_start(self, outer: _Loop, frame: FrameType) -> bool:
        if self.muted and outer.iteration == self.target and self.phase != "iter_end":
            self._restore_here(frame)
            return True
        return False

    def _restore_here(self, frame: FrameType | None) -> None:
        self.restore(self.ckpt, frame)
        self.set_seq(self.ckpt.meta["seq"])
        self.muted = False
        print(
            f"florql: resumed run {self.run_id} from checkpoint {self.ckpt.ckpt_id} "
            f"(iteration {self.target}, {self.phase})",
            file=sys.stderr,
        )


def choose_checkpoint(store: Store, run_id: str) -> Any:
    """The run's last complete checkpoint, or None (then the run restarts, with a warning).

    A checkpoint missing a loop-carried variable (`incomplete`, florql/loopstate.py) cannot
    continue the run exactly, so it is passed over."""
    ckpts = [c for c in store.checkpoints(run_id) if not c.meta.get("incomplete")]
    return ckpts[-1] if ckpts else None


def check_resumable(run: Any, run_id: str) -> None:
    if run is None:
        raise BadInputError(f"no run {run_id} in this store; `florql runs` lists the runs")
    if run.status != "crashed":
        raise BadInputError(
            f"run {run_id} is {run.status}; only a crashed run can be resumed "
            "(record a new run instead)"
        )
