"""The background flusher: makes a session's records durable, and keeps them while the store
cannot take them.

The training thread only appends tuples to `session._buf` (a deque); this thread wakes every
`interval` seconds, turns them into record bodies and hands them to the LogWriter in one group
commit. Checkpoint writes and the end of the run call `flush()` themselves.

Invariants (tests cite them by number):

1. A record leaves `pending` only when a flush that included it returned: a record not in
   `pending` any more is durable (acknowledged); one still in it is not yet.
2. Storage trouble never reaches the training thread: `florql.log` only appends to a deque,
   and neither this thread nor `Session._begin` raises into the script.
3. An OSError from the store (disk full, I/O error, read-only file system) loses nothing: the
   records stay in `pending`, the flush is retried with exponential backoff (`RETRY_FIRST`
   seconds, doubling, at most `RETRY_MAX`), the run is *degraded* (checkpoints are skipped while
   the store refuses writes; RUN_END's stats hold `degraded` and its reason), and one line says
   so on stderr, another when the store takes writes again.
4. While the store refuses writes, at most `capacity` records wait in memory (setting
   `FLORQL_BUFFER_RECORDS`, default 1,000,000 records, roughly 150 MB); newer ones are dropped
   and counted (`values_dropped`), with one warning. They were never acknowledged.
5. A retry first learns which pending records did reach the log (a frame written whole just
   before the error) and does not append them twice: every record of a run has its own `seq`.
6. Any other exception is a bug in florql, and recording stops loudly: the run ends `failed`
   with the reason (RUN_END written if the store still can), one line on stderr, and
   `florql.log` goes on returning its values, recording nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from florql.schema import RUN_BEGIN, RUN_RESUME, VALUE, value_body

RETRY_FIRST = 0.5
RETRY_MAX = 30.0
EXIT_PATIENCE = 10.0  # seconds the end of a run keeps retrying a store that refuses writes


def storage_trouble(exc: BaseException) -> bool:
    """True when an OSError caused `exc` (the store's own errors wrap the OSError).

    >>> storage_trouble(OSError(28, "No space left on device")), storage_trouble(KeyError(1))
    (True, False)
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def reason_of(exc: BaseException) -> str:
    """One line describing `exc`, preferring the OS's words for storage trouble."""
    seen: BaseException | None = exc
    for _ in range(8):
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _seq_of(kind: int, body: Any) -> int | None:
    """The run's seq a record carries (list bodies: index 1; dict bodies: "seq")."""
    if isinstance(body, (list, tuple)) and len(body) > 1 and isinstance(body[1], int):
        return body[1]
    if isinstance(body, dict):
        seq = body.get("seq")
        return seq if isinstance(seq, int) else None
    return None


class Flusher:
    """Drains `session._buf` to `session.writer` (see the module docstring).

    Args:
        session: the recording session (its `_buf`, `_drain_lock`, `writer`, `store`, `run_id`,
            `_begun`, `_begin_locked()` and `abandon(reason)` are used).
        interval: seconds between background flushes.
        capacity: records kept in memory while the store refuses writes.
    """

    def __init__(self, session: Any, *, interval: float, capacity: int) -> None:
        self.session = session
        self.interval = interval
        self.capacity = capacity
        self.pending: list = []
        self._pending_values = 0
        self.troubled = False  # the store refuses writes right now
        self.degraded_reason: str | None = None  # the first trouble of the run, if any
        self.failed_flushes = 0
        self.values_dropped = 0
        self.failure: str | None = None  # a bug stopped the recording
        self.cpu_seconds = 0.0  # this thread's CPU time: it competes with training
        self._backoff = RETRY_FIRST
        self._next_try = 0.0
        self._mark: int | None = None  # the store's last LSN before the failed flush
        self._warned_full = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="florql-flusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after its current pass); records left are the caller's to flush."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval) and self.failure is None:
            c0 = time.thread_time()
            try:
                self.cycle()
            except Exception as e:  # noqa: BLE001 - this thread never dies quietly
                self.failed(e)
            self.cpu_seconds += time.thread_time() - c0

    def cycle(self) -> None:
        """One background pass: write what is queued, unless a retry is not due yet."""
        if not self.session._buf and not self.pending:
            return
        if self.troubled and time.monotonic() < self._next_try:
            with self.session._drain_lock:
                self._take()  # keeps the deque bounded while waiting (invariant 4)
            return
        self.flush()

    # --- flushing -----------------------------------------------------------------------------

    def flush(self) -> bool:
        """Make every record queued so far durable. False when the store refused (the records
        wait for a retry) or recording stopped; never raises."""
        if self.failure is not None:
            return False
        try:
            with self.session._drain_lock:
                self._take()
                self._write()
        except Exception as e:  # noqa: BLE001 - sorted into storage trouble and bugs below
            self.failed(e)
            return False
        if self.troubled:
            self._recovered()
        return True

    def finish(self, patience: float = EXIT_PATIENCE) -> bool:
        """Flush at the end of the run, retrying storage trouble for up to `patience` seconds."""
        deadline = time.monotonic() + patience
        while not self.flush():
            if self.failure is not None or time.monotonic() >= deadline:
                return False
            time.sleep(min(self._backoff, max(0.0, deadline - time.monotonic())))
        return True

    def _take(self) -> None:
        """Move queued records into `pending`, as record bodies (caller holds the drain lock)."""
        buf = self.session._buf
        n = len(buf)
        if not n:
            return
        room = self.capacity - len(self.pending) if self.troubled else n
        rid = self.session.run_id
        out = self.pending
        values = 0
        popleft = buf.popleft
        for _ in range(n):
            item = popleft()
            if room <= 0:
                self._drop(item)
                continue
            room -= 1
            if item[0] == VALUE:
                _, seq, name, value, ctx, t = item
                out.append((VALUE, value_body(rid, seq, name, value, ctx, t)))
                values += 1
            else:
                out.append(item)
        self._pending_values += values

    def _drop(self, item: tuple) -> None:
        if item[0] == VALUE:
            self.values_dropped += 1
        if not self._warned_full:
            self._warned_full = True
            print(
                f"florql: warning: the store still refuses writes and {self.capacity} records "
                "wait in memory (FLORQL_BUFFER_RECORDS); newer values of run "
                f"{self.session.run_id} are dropped until it accepts writes again",
                file=sys.stderr,
            )

    def _write(self) -> None:
        s = self.session
        if self.troubled:
            self._forget_written()
        else:
            self._mark = s.store.last_lsn
        if not s._begun:
            s._begin_locked()
        if self.pending:
            s.writer.append_many(self.pending)
        if self.pending or s._begun:
            s.writer.flush()
        s.values += self._pending_values
        self._pending_values = 0
        self.pending = []

    def _forget_written(self) -> None:
        """Drop pending records that reached the log before the error (invariant 5)."""
        s = self.session
        store = s.store
        store.refresh()
        if self._mark is None:
            return
        written = set()
        for r in store.scan(from_lsn=self._mark + 1, run_id=s.run_id):
            if r.kind in (RUN_BEGIN, RUN_RESUME):
                s._begun = True  # written whole; only its fsync failed: not again
                continue
            seq = _seq_of(r.kind, r.body)
            if seq is not None:
                written.add(seq)
        if written:
            self.pending = [e for e in self.pending if _seq_of(*e) not in written]
            self._pending_values = sum(1 for e in self.pending if e[0] == VALUE)

    # --- trouble ------------------------------------------------------------------------------

    def retry_due(self, now: float | None = None) -> bool:
        """Whether the backoff after the last refused flush has passed."""
        return (time.monotonic() if now is None else now) >= self._next_try

    def failed(self, exc: BaseException) -> None:
        """Sort a failed write: storage trouble is retried later; anything else ends the run."""
        if not storage_trouble(exc):
            self._fatal(exc)
            return
        self.failed_flushes += 1
        if self._mark is None:  # the store's state learns nothing from a failed commit
            self._mark = self.session.store.last_lsn
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(2 * self._backoff, RETRY_MAX)
        if self.troubled:
            return
        self.troubled = True
        reason = reason_of(exc)
        if self.degraded_reason is None:
            self.degraded_reason = f"the store refused writes ({reason})"
        print(
            f"florql: warning: the store at {self.session.store_path} refuses writes "
            f"({reason}); run {self.session.run_id} goes on: its values wait in memory and are "
            "retried, checkpoints are skipped until the store accepts writes again",
            file=sys.stderr,
        )

    def _recovered(self) -> None:
        self.troubled = False
        self._backoff = RETRY_FIRST
        self._mark = None
        print(
            f"florql: note: the store accepts writes again; run {self.session.run_id} is "
            "recorded on (marked degraded: checkpoints were skipped meanwhile)",
            file=sys.stderr,
        )

    def _fatal(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = f"recording stopped by a florql error: {reason_of(exc)}"
        print(
            f"florql: error: {self.failure}; run {self.session.run_id} is marked failed and "
            "training goes on unrecorded (please report this as a florql bug)",
            file=sys.stderr,
        )
        self.session.abandon(self.failure)
