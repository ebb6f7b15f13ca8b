"""When to checkpoint (the adaptive `Policy`) and how (`Checkpointer`: snapshot, then write).

Policy: a checkpoint costs its foreground stall plus the part of its background write that
competes with training: the writer thread's CPU time (encoding, checksums, copies, the
kernel's side of write and fsync), weighted by `contention` (all of it on a 2-core machine,
less with more cores). Time the writer spends waiting for the disk takes no core from
training, so it is not charged: on a short epoch that wait (an fsync: 1-20 ms) would otherwise
cost a checkpoint per epoch that the training never notices. The
policy keeps the cumulative cost within `budget` x wall time since the outer loop started:
every iteration when affordable, else every k-th, as the online measurements allow. The first
opportunity is always taken (it is the measurement) and so is the outer loop's last iteration.

>>> p = Policy(budget=0.02, contention=1.0)
>>> p.should(0, False, now=0.0)              # the first one measures
True
>>> p.taken(stall=0.001, write=0.009, now=0.0)   # costs 10 ms
>>> p.should(1, False, now=0.2)              # 2% of 0.2 s = 4 ms: too early
False
>>> p.should(2, False, now=1.0)              # 2% of 1 s = 20 ms: affordable
True
>>> p.should(3, True, now=1.01)              # the last iteration is always kept
True

Checkpointer: `offer()` runs in the training thread; when the policy agrees and a snapshot
buffer is free it captures the state (`capture.Snapshot`: copies into kept buffers) and queues
the write; a background thread first makes every record up to the checkpoint's seq durable,
then calls `LogWriter.write_checkpoint`. Backpressure: at most `POOL` snapshots exist (one when
two would exceed `FLORQL_CKPT_MEMORY` bytes, default 2 GiB); when none is free the checkpoint
is skipped (the last one waits instead).

`FLORQL_CKPT_EVERY=k` replaces the budget by a fixed schedule: every k-th outer iteration (and
the last), waiting for the writer rather than skipping (tests, and users who want a guarantee).

Storage trouble never reaches the training thread (florql/flusher.py, invariant 2): while the
store refuses writes (the flusher cannot make the records before a checkpoint durable, or a
checkpoint write fails with an OSError) checkpoints are skipped and counted, the run is marked
degraded, and a failed write is retried no sooner than `RETRY_FIRST` seconds later (doubling up
to `RETRY_MAX`). A checkpoint write that fails for another reason (a florql bug) turns
checkpoints off for the rest of the run, said once on stderr; values are still recorded.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any

from florql import capture, config, loopstate
from florql.flusher import RETRY_FIRST, RETRY_MAX, reason_of, storage_trouble

POOL = 2


class Policy:
    """Decides, per opportunity, whether a checkpoint fits in the overhead budget."""

    def __init__(
        self, budget: float = 0.02, contention: float | None = None, every: int | None = None
    ) -> None:
        self.budget = budget
        self.every = every  # fixed schedule (FLORQL_CKPT_EVERY): every k-th iteration
        self.contention = _contention() if contention is None else contention
        self.start: float | None = None
        self.spent = 0.0
        self.n = 0
        self._stall = 0.0
        self._write = 0.0
        self._writes = 0

    def should(self, iteration: int, is_last: bool, now: float | None = None) -> bool:
        now = time.perf_counter() if now is None else now
        if self.start is None:
            self.start = now
        if is_last or self.n == 0:
            return True
        if self.every:
            return iteration % self.every == 0
        return self.spent + self.estimate() <= self.budget * (now - self.start)

    def estimate(self) -> float:
        """Expected cost of the next checkpoint (moving averages of the measured parts)."""
        return self._stall + self._write

    def taken(self, stall: float, write: float | None = None, now: float | None = None) -> None:
        """Account a checkpoint's foreground stall (and its write time, when already known)."""
        if self.start is None:
            self.start = time.perf_counter() if now is None else now
        self.n += 1
        self.spent += stall
        self._stall = stall if self.n == 1 else 0.5 * (self._stall + stall)
        if write is not None:
            self.written(write)

    def written(self, seconds: float) -> None:
        """Account a finished background write's CPU seconds (weighted by `contention`)."""
        cost = self.contention * seconds
        self.spent += cost
        self._writes += 1
        self._write = cost if self._writes == 1 else 0.5 * (self._write + cost)


def _contention() -> float:
    """Share of a background write that slows training: the writer takes a core from torch."""
    return min(1.0, 2.0 / (os.cpu_count() or 2))


class Checkpointer:
    """Takes checkpoints of `session.objects` and writes them in a background thread."""

    def __init__(self, session: Any, budget: float = 0.02) -> None:
        self.session = session
        self.policy = Policy(budget, every=config.ckpt_every())
        self.contention = self.policy.contention
        self._free: queue.Queue = queue.Queue()
        self._pool_size = 0
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.disabled: str | None = None  # why checkpoints are off for the rest of the run
        self.degraded_reason: str | None = None
        self._retry_at = 0.0  # monotonic time before which a failed write is not retried
        self._backoff = RETRY_FIRST
        self.count = 0
        self.skipped = 0
        self.failed = 0  # writes that failed (storage trouble or a bug)
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.fg_seconds = 0.0
        self.bg_seconds = 0.0  # wall time of background writes (disk waits included)
        self.bg_cpu_seconds = 0.0  # the writer thread's CPU time: what competes with training

    def iteration_started(self, now: float) -> None:
        if self.policy.start is None:
            self.policy.start = now

    def offer(self, **where: Any) -> bool:
        """Maybe checkpoint now (`hold`, then `commit`); True when a checkpoint was queued."""
        job = self.hold(**where)
        if job is None:
            return False
        self.commit(job)
        return True

    def hold(
        self,
        *,
        seq: int,
        ctx: tuple,
        phase: str,
        found_vars: loopstate.LoopValues | dict[str, Any],
        iteration: int,
        is_last: bool,
    ) -> tuple | None:
        """Maybe snapshot the state now, without writing it yet: the job to `commit` (write) or
        `discard` once the caller knows whether the state is one to keep (None: no
        checkpoint now)."""
        if self._unwritable():
            self.skipped += 1
            return None
        if not self.policy.should(iteration, is_last):
            return None
        snap = self._snapshot_buffer(wait=is_last or bool(self.policy.every))
        if snap is None:
            self.skipped += 1
            return None
        t0 = time.perf_counter()
        objects = self.session.objects
        skels, tensors = capture.state_skeletons(objects)
        meta = {
            "run_id": self.session.run_id,
            "seq": seq,
            "ctx": [list(c) for c in ctx],
            "phase": phase,
            "objects": skels,
            "rng": capture.capture_rng(),
            "grads": loopstate.encode_grads(objects, tensors),
            **_encode_vars(found_vars, tensors, objects),
        }
        blobs = snap.take(tensors)
        stall = time.perf_counter() - t0
        self.fg_seconds += stall
        self.policy.taken(stall)
        self._maybe_shrink_pool(snap.nbytes)
        return (meta, blobs, snap)

    def _unwritable(self) -> bool:
        """Whether checkpoints must be skipped now: off, or the store refuses writes (a
        checkpoint is tried again once the flusher's retry is due: its write retries first)."""
        if self.disabled is not None:
            return True
        flusher = self.session.flusher
        now = time.monotonic()
        return (flusher.troubled and not flusher.retry_due(now)) or now < self._retry_at

    def disable(self, reason: str) -> None:
        """No more checkpoints in this run (queued ones are dropped unwritten)."""
        self.disabled = reason

    def commit(self, job: tuple) -> None:
        """Queue a held snapshot for the background writer."""
        self._ensure_thread()
        self._jobs.put(job)

    def discard(self, job: tuple) -> None:
        """Drop a held snapshot (its buffer is free again)."""
        self._free.put(job[2])

    def _snapshot_buffer(self, wait: bool) -> capture.Snapshot | None:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._pool_size < POOL:
            self._pool_size += 1
            return capture.Snapshot()
        if wait:
            return self._free.get()
        return None

    def _maybe_shrink_pool(self, nbytes: int) -> None:
        cap = config.ckpt_memory()
        if nbytes * POOL > cap:
            self._pool_size = POOL  # never allocate a second buffer set

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name="florql-ckpt", daemon=True
            )
            self._thread.start()

    def _write_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            meta, blobs, snap = job
            try:
                if self.disabled is not None:
                    continue
                t0, c0 = time.perf_counter(), time.thread_time()
                # Under the write lock: no value flush may interleave with the checkpoint's own
                # (a failed one would take those values with it).
                with self.session.write_lock:
                    if not self.session.drain():  # records up to meta.seq must be durable first
                        self.skipped += 1
                        continue
                    info = self.session.writer.write_checkpoint(self.session.run_id, meta, blobs)
                cpu = time.thread_time() - c0
                self.bg_seconds += time.perf_counter() - t0
                self.bg_cpu_seconds += cpu
                self.policy.written(cpu)
                self.count += 1
                self.raw_bytes += info.raw_bytes
                self.stored_bytes += info.stored_bytes
                self._backoff = RETRY_FIRST
            except Exception as e:  # noqa: BLE001 - never into the training thread
                self._write_failed(e)
            finally:
                self._free.put(snap)

    def _write_failed(self, exc: BaseException) -> None:
        self.failed += 1
        reason = reason_of(exc)
        if storage_trouble(exc):
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(2 * self._backoff, RETRY_MAX)
            if self.degraded_reason is None:
                self.degraded_reason = f"a checkpoint write failed ({reason})"
                print(
                    f"florql: warning: a checkpoint of run {self.session.run_id} could not be "
                    f"written ({reason}); training goes on, checkpoints are skipped until the "
                    "store takes writes again",
                    file=sys.stderr,
                )
            return
        self.disable(f"a checkpoint write failed: {reason}")
        self.degraded_reason = self.degraded_reason or self.disabled
        print(
            f"florql: error: {self.disabled}; no more checkpoints in run {self.session.run_id} "
            "(values are still recorded; please report this as a florql bug)",
            file=sys.stderr,
        )

    def close(self) -> None:
        """Wait until every queued checkpoint is written."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None


def _encode_vars(
    found: loopstate.LoopValues | dict, tensors: list, objects: dict[str, Any]
) -> dict[str, Any]:
    """Checkpoint-meta entries for the script variables (florql/loopstate.py): one skeleton
    dict per scope, `incomplete` {name: why} for values recorded code reads that cannot be
    stored (the planner will not restore this checkpoint), `unavailable` {name: why} for
    values only a new statement could read (a request whose statements read one will not
    restore it), `uncaptured` {name: type} for objects changed in place whose state cannot be
    read."""
    owned = loopstate.owned_ids(objects)
    out: dict[str, Any] = {"vars": {}}
    notes: dict[str, dict[str, str]] = {"incomplete": {}, "unavailable": {}, "uncaptured": {}}
    if isinstance(found, dict):  # plain {name: value} of the frame holding the inner loop
        found = loopstate.LoopValues({"vars": found} if found else {})
    for key, values in found.scopes.items():
        skels, bad, skipped = loopstate.encode_scope(
            values, tensors, owned, set(found.receivers), found.extras
        )
        out[key] = skels
        for name, why in bad.items():
            notes["unavailable" if name in found.extras else "incomplete"][name] = why
        notes["uncaptured"].update(skipped)
    out.update({k: v for k, v in notes.items() if v})
    return out
