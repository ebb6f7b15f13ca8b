"""The log manager's front: LogWriter buffers logical records and commits them in groups.

`append` only takes a lock and appends to a list (no I/O, no encoding). `flush` packs everything
buffered into frames and hands them to the store's commit, which appends them under the log
lock and fsyncs once for all of them (group commit), then returns the last durable LSN.

>>> from florql_storage import Store, kinds
>>> from florql_storage.fs import MemFS
>>> store = Store.open("/s", create=True, fs=MemFS())
>>> w = store.writer()
>>> w.begin_run("r1", {"script": "train.py"})
>>> w.append(kinds.VALUE, ["r1", 1, "loss", 0.25, [], 0.0, ""])
>>> w.flush()
2
>>> ck = w.write_checkpoint("r1", {"seq": 1}, [b"weights" * 1000])
>>> w.end_run("r1", "finished", {})
>>> [r.kind for r in store.scan()], store.runs()["r1"].status
([1, 3, 16, 17, 2], 'finished')
>>> meta, blobs = store.load_checkpoint(ck); bytes(blobs[0]) == b"weights" * 1000
True
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

from . import kinds as K
from .errors import BadInputError, StoreError, write_failed
from .format import RUNS_DIR
from .frame import check_packable, pack_entries
from .pages import PageWriter
from .records import CheckpointInfo

# Records per frame for plain appends: big enough that a frame amortizes its header and fsync,
# small enough that a reader never holds a huge payload (about 1 MiB of typical values).
MAX_FRAME_RECORDS = 16384


def run_lock_path(root: str, run_id: str) -> str:
    """The liveness lock file of a run (named by hash: run ids may hold any character)."""
    return f"{root}/{RUNS_DIR}/{hashlib.sha256(run_id.encode()).hexdigest()[:24]}.lock"


class _Atomic(list):
    """A group of (kind, body) that must land in one frame."""


class LogWriter:
    """Appends logical records and checkpoints to a store; see docs/INTERFACES.md §1."""

    def __init__(self, store) -> None:
        self._store = store
        self._buf: list = []
        self._atomic_buffered = False  # whether _buf holds an _Atomic group (slow path)
        self._buf_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.writer_id = uuid.uuid4().hex[:16]
        self._pages = PageWriter(store.fs, store.root, self.writer_id)
        self._run_locks: dict = {}
        self._closed = False

    # ---- records ----------------------------------------------------------------------------

    def append(self, kind: int, body) -> None:
        """Buffer one logical record (thread-safe, no I/O); durable after the next `flush`."""
        if type(kind) is not int or kind in K.INTERNAL or not 0 < kind < 256:
            raise BadInputError(
                f"record kind {kind!r} is not a user kind; use one of florql_storage.kinds 1..15"
            )
        with self._buf_lock:
            self._buf.append((kind, body))

    def append_many(self, entries, atomic: bool = False) -> None:
        """Buffer [(kind, body), ...]; with atomic=True they share one frame: all durable or none."""
        group = [(k, b) for k, b in entries]
        for k, _ in group:
            if type(k) is not int or k in K.INTERNAL or not 0 < k < 256:
                raise BadInputError(
                    f"record kind {k!r} is not a user kind; use one of florql_storage.kinds 1..15"
                )
        with self._buf_lock:
            if atomic and group:
                self._buf.append(_Atomic(group))
                self._atomic_buffered = True
            else:
                self._buf.extend(group)

    def _append_internal(self, kind: int, body) -> None:
        with self._buf_lock:
            self._buf.append((kind, body))

    def flush(self) -> int:
        """Make everything appended before this call durable; returns the store's last LSN."""
        self._check_open()
        with self._flush_lock:
            with self._buf_lock:
                items, self._buf = self._buf, []
                atomic_buffered, self._atomic_buffered = self._atomic_buffered, False
            if not items:
                return self._store.last_lsn
            packed, bad = [], None
            for batch, atomic in _batches(items, atomic_buffered):
                try:
                    packed.append((batch, pack_entries(batch)))
                except BadInputError as exc:
                    # Commit the good records (all or none of an atomic group); report the bad
                    # one afterwards, so one bad value never loses its neighbours.
                    bad = exc
                    good = [] if atomic else [e for e in batch if _packs(e)]
                    if good:
                        packed.append((good, pack_entries(good)))
            last = self._store.commit(packed)
            if bad is not None:
                raise bad
            return last

    # ---- runs -------------------------------------------------------------------------------

    def begin_run(self, run_id: str, meta: dict) -> None:
        """Append RUN_BEGIN, take the run's liveness lock, flush. BadInputError if the run exists."""
        self._check_run_id(run_id)
        _check_dict("run meta", meta)
        self._store.refresh()
        if self._store.run_end(run_id)[0]:
            raise BadInputError(
                f"run {run_id!r} already exists in the store; choose a new run id or resume it"
            )
        self._take_run_lock(run_id)
        self._append_internal(K.RUN_BEGIN, {**meta, "run_id": run_id})
        self.flush()

    def resume_run(self, run_id: str, body: dict) -> None:
        """Append RUN_RESUME for a crashed run and take its liveness lock, then flush."""
        self._check_run_id(run_id)
        _check_dict("resume body", body)
        self._store.refresh()
        exists, end = self._store.run_end(run_id)
        if not exists:
            raise BadInputError(f"run {run_id!r} is not in the store; list runs with `florql runs`")
        if end is not None:
            raise BadInputError(
                f"run {run_id!r} already ended ({end.get('status')}); only a crashed run can be resumed"
            )
        self._take_run_lock(run_id)
        self._append_internal(K.RUN_RESUME, {**body, "run_id": run_id})
        self.flush()

    def end_run(self, run_id: str, status: str, body: dict) -> None:
        """Append RUN_END with `status`, flush, release the run's liveness lock."""
        self._check_run_id(run_id)
        _check_dict("run end body", body)
        self._append_internal(K.RUN_END, {**body, "run_id": run_id, "status": status})
        self.flush()
        lock = self._run_locks.pop(run_id, None)
        if lock is not None:
            lock.release()

    def _take_run_lock(self, run_id: str) -> None:
        if run_id in self._run_locks:
            return
        lock = self._store.fs.lock(run_lock_path(self._store.root, run_id), blocking=False)
        if lock is None:
            raise StoreError(
                f"run {run_id!r} is being written by another process; wait for it or stop it first"
            )
        self._run_locks[run_id] = lock

    @staticmethod
    def _check_run_id(run_id) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise BadInputError(f"a run id must be a non-empty string, not {run_id!r}")

    # ---- checkpoints ------------------------------------------------------------------------

    def write_checkpoint(self, run_id: str, meta: dict, blobs) -> CheckpointInfo:
        """Write a checkpoint's pages (dedup, lz4 where it pays), then its end record; flush.

        The checkpoint exists only once this returns (invariant 4).
        """
        self._check_open()
        self._check_run_id(run_id)
        _check_dict("checkpoint meta", meta)
        t0 = time.perf_counter()
        ckpt_id = "ck-" + uuid.uuid4().hex[:16]
        self._append_internal(K.CKPT_BEGIN, {"ckpt_id": ckpt_id, "run_id": run_id})
        self._store.refresh()  # learn pages other writers stored since, for dedup
        known = self._store.stored_pages()
        try:
            refs, stored = self._pages.write_blobs(blobs, known, self._store.page_bytes)
        except OSError as exc:
            raise write_failed(self._store.root, exc) from exc
        raw = sum(r[0] for r in refs)
        seconds = time.perf_counter() - t0
        body = {
            "ckpt_id": ckpt_id,
            "run_id": run_id,
            "meta": meta,
            "blobs": refs,
            "raw_bytes": raw,
            "stored_bytes": stored,
            "write_seconds": seconds,
        }
        self._append_internal(K.CKPT_END, body)
        lsn = self.flush()
        for c in reversed(self._store.checkpoints(run_id)):
            if c.ckpt_id == ckpt_id:
                return c
        return CheckpointInfo(ckpt_id, run_id, lsn, meta, raw, stored, seconds)

    # ---- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Flush what is buffered, release run locks (unended runs then read as crashed)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            for lock in self._run_locks.values():
                lock.release()
            self._run_locks.clear()
            self._pages.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("this log writer is closed; get a new one with store.writer()")

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_dict(what: str, value) -> None:
    """BadInputError unless `value` is a dict msgpack can store (checked before any I/O)."""
    if not isinstance(value, dict):
        raise BadInputError(f"{what} must be a dict, not {type(value).__name__}")
    check_packable(what, value)


def _packs(entry) -> bool:
    try:
        pack_entries([entry])
        return True
    except BadInputError:
        return False


def _batches(items: list, atomic_buffered: bool = True) -> list[tuple[list, bool]]:
    """Cut buffered items into frame-sized (batch, atomic) pairs; an atomic group is never split."""
    if not atomic_buffered:
        # The common case, at C speed: plain records cut into frames by slicing.
        return [
            (items[i : i + MAX_FRAME_RECORDS], False)
            for i in range(0, len(items), MAX_FRAME_RECORDS)
        ]
    out: list[tuple[list, bool]] = []
    cur: list = []
    for item in items:
        if isinstance(item, _Atomic):
            if cur:
                out.append((cur, False))
                cur = []
            out.append((list(item), True))
        else:
            cur.append(item)
            if len(cur) >= MAX_FRAME_RECORDS:
                out.append((cur, False))
                cur = []
    if cur:
        out.append((cur, False))
    return out
