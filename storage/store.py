"""Store: open (with recovery), read (scan, runs, checkpoints) and commit frames.

A Store holds the derived state recovery built (`StoreState`) and keeps it current: `refresh`
redoes what other processes appended; its own writers' commits fold their frames in directly.
Commits run under the log lock (an flock on LOCK), so several processes append to one log and
LSNs stay globally increasing: a committer first redoes whatever others appended since it last
looked, then assigns the next LSNs.

>>> from florql_storage.fs import MemFS
>>> store = Store.open("/s", create=True, fs=MemFS())
>>> store.last_lsn, store.runs(), store.check()
(0, {}, [])
"""

from __future__ import annotations

import os
import posixpath
import threading
import uuid
from collections.abc import Callable, Iterator

from .errors import (
    UNREADABLE,
    BadInputError,
    CorruptionError,
    StoreError,
    unreadable,
    write_failed,
)
from .format import (
    DEFAULT_INDEX_INTERVAL,
    DEFAULT_INDEX_RECORDS,
    DEFAULT_PAGE_BYTES,
    DEFAULT_SEGMENT_BYTES,
    INDEX_DIR,
    LOCK,
    LOG_DIR,
    MANIFEST,
    MANIFEST_TMP,
    PAGES_DIR,
    QUARANTINE_DIR,
    RUNS_DIR,
    segment_name,
)
from .fs import FileSystem, RealFS
from .manifest import Manifest, read_manifest, write_manifest
from .records import CheckpointInfo, Lost, Problem, Record, RunInfo
from .recovery import bodies_of, corruption, records_of, recover, redo
from .salvage import manifest_from_segments
from .segment import HEADER_SIZE, FrameScanner, encode_header
from .state import StoreState, run_of
from .writer import LogWriter, run_lock_path

_OURS = {MANIFEST, MANIFEST_TMP, LOCK, LOG_DIR, PAGES_DIR, INDEX_DIR, RUNS_DIR, QUARANTINE_DIR}


class Store:
    """An open florql store. Use `Store.open`; see docs/INTERFACES.md §1 for the contract."""

    def __init__(
        self, fs: FileSystem, root: str, manifest: Manifest, state: StoreState, options: dict
    ) -> None:
        self.fs = fs
        self.root = root
        self._manifest = manifest
        self._state = state
        self._mutex = threading.RLock()
        self._writers: list[LogWriter] = []
        self.segment_bytes = options.get("segment_bytes", DEFAULT_SEGMENT_BYTES)
        self.page_bytes = options.get("page_bytes", DEFAULT_PAGE_BYTES)
        self.index_interval = options.get("index_interval", DEFAULT_INDEX_INTERVAL)
        self.index_records = options.get("index_records", DEFAULT_INDEX_RECORDS)
        self.recovery_problems: list[Problem] = options.get("problems", [])
        self.allow_damage = bool(options.get("allow_damage", False))
        self._seg_handle = None
        self._seg_handle_no = 0

    # ---- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path,
        create: bool = True,
        fs: FileSystem | None = None,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        page_bytes: int = DEFAULT_PAGE_BYTES,
        index_interval: int = DEFAULT_INDEX_INTERVAL,
        index_records: int = DEFAULT_INDEX_RECORDS,
        allow_damage: bool = False,
    ) -> Store:
        """Open (running recovery) or create the store at `path`.

        Raises StoreError for a path that is a file, not a store, missing (with create=False),
        unwritable when it must be created, or of a newer format; CorruptionError if damaged.
        Opening an existing store writes nothing.

        With `allow_damage`, a damaged store opens for reading: recovery redoes the whole log,
        steps over damaged ranges (`damage()` lists them) and readers return every intact
        record (recovery.py, invariant 8); a damaged MANIFEST is rebuilt in memory from the
        segments. Such a store refuses writers until `florql check --repair` has run.
        """
        if fs is None:
            fs = RealFS()
            root = os.path.abspath(os.fspath(path))
        else:
            root = posixpath.normpath(os.fspath(path))
        if segment_bytes < 4096 or page_bytes < 1:
            raise BadInputError("segment_bytes must be at least 4096 and page_bytes at least 1")
        _check_path(fs, root, create, allow_damage)
        if not fs.exists(f"{root}/{MANIFEST}") and not (allow_damage and _holds_data(fs, root)):
            _init_store(fs, root)
        _check_contents(fs, root)
        problems: list[Problem] = []
        damaged_manifest = None
        try:
            manifest = read_manifest(fs, root)
        except CorruptionError as exc:
            if not allow_damage:
                raise
            manifest = manifest_from_segments(fs, root)
            damaged_manifest = Lost(1, 0, exc.segment or MANIFEST, 0, f"{exc}".split(";")[0])
            problems.append(Problem("manifest", exc.segment, 0, None, str(exc)))
        manifest, state, _torn = recover(fs, root, manifest, problems, tolerate=allow_damage)
        if damaged_manifest is not None:
            state.damage.insert(0, damaged_manifest)
        options = {
            "allow_damage": allow_damage,
            "segment_bytes": segment_bytes,
            "page_bytes": page_bytes,
            "index_interval": index_interval,
            "index_records": index_records,
            "problems": problems,
        }
        return cls(fs, root, manifest, state, options)

    # ---- reading ----------------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """The highest durable LSN this Store has seen (0 for an empty store)."""
        return self._state.last_lsn

    def refresh(self) -> int:
        """Catch up with frames other processes appended since; returns `last_lsn`.

        Reads only what is new; a torn tail (a write in progress) is left for a later refresh.
        """
        with self._mutex:
            try:
                manifest = read_manifest(self.fs, self.root)
            except CorruptionError:
                if not self.allow_damage:
                    raise
                manifest = self._manifest  # the one rebuilt from the segments at open
            redo(self.fs, self.root, manifest, self._state, tolerate=self.allow_damage)
            self._manifest = manifest
            return self._state.last_lsn

    def damage(self) -> list[Lost]:
        """Unrepaired damage a store opened with `allow_damage=True` stepped over ([] if none).

        Each entry names the LSNs lost (possibly none, e.g. a damaged header whose frames
        are intact) and where; `runs_around(lost)` names the runs recording then.
        """
        with self._mutex:
            return list(self._state.damage)

    def holes(self) -> list[Lost]:
        """LSN ranges a repair cut out of the log (hole frames); they read as absent."""
        with self._mutex:
            return list(self._state.holes)

    def runs_around(self, lost: Lost) -> list[str]:
        """Runs that were recording when the records of `lost` were written (they may miss
        some of their records there)."""
        with self._mutex:
            return self._state.runs_around(lost.first_lsn, lost.last_lsn)

    def scan(self, from_lsn: int = 1, kinds=None, run_id: str | None = None) -> Iterator[Record]:
        """Durable records with LSN >= from_lsn in LSN order, optionally filtered."""
        kind_set = None if kinds is None else set(kinds)
        for frame in self.scan_frames(from_lsn):
            for r in frame:
                if kind_set is not None and r.kind not in kind_set:
                    continue
                if run_id is not None and run_of(r.kind, r.body) != run_id:
                    continue
                yield r

    def scan_frames(self, from_lsn: int = 1) -> Iterator[list[Record]]:
        """Durable records with LSN >= from_lsn, one list per frame (for bulk readers)."""
        for f, path in self._good_frames(from_lsn):
            records = records_of(f, path)
            if records[0].lsn < from_lsn:
                records = records[from_lsn - records[0].lsn :]
            yield records

    def scan_bodies(self, from_lsn: int = 1) -> Iterator[tuple[int, tuple, tuple]]:
        """Durable records with LSN >= from_lsn as (first_lsn, kinds, bodies), one per frame.

        The bulk reader's form of `scan_frames`: no Record per logical record; record i of a
        frame has LSN first_lsn + i, kind kinds[i], body bodies[i]. Bodies are decoded with
        msgpack arrays as tuples (not lists); otherwise they equal `scan`'s. Every frame's
        checksum is verified and malformed frames raise CorruptionError, as for `scan`.
        """
        for f, path in self._good_frames(from_lsn):
            kinds, bodies = bodies_of(f, path)
            base = f.base_lsn
            if base < from_lsn:
                kinds, bodies = kinds[from_lsn - base :], bodies[from_lsn - base :]
                base = from_lsn
            yield base, kinds, bodies

    def _good_frames(self, from_lsn: int) -> Iterator[tuple]:
        """(frame, segment path) of each good frame holding an LSN >= from_lsn, up to last_lsn.

        Steps over what a tolerant open found damaged (`StoreState.skips`, `dead`, `gaps`,
        `undecodable`) and over hole frames; any other damage raises CorruptionError.
        """
        with self._mutex:
            st = self._state
            segs = list(self._manifest.segments)
            tail_seg, tail_off, last = st.tail_seg, st.tail_off, st.last_lsn
            skips, dead, gaps = dict(st.skips), set(st.dead), set(st.gaps)
            bad = set(st.undecodable)
            if last < from_lsn or not segs:
                return
            entry = st.locate_entry(from_lsn)
            lsn, seg_no, offset = entry if entry is not None else (segs[0][1], segs[0][0], 0)
        nos = [s for s, _ in segs]
        k = nos.index(seg_no)
        offset = offset or HEADER_SIZE
        while k < len(segs) and nos[k] <= tail_seg:
            seg_no = nos[k]
            path = f"{self.root}/{segment_name(seg_no)}"
            limit = tail_off if seg_no == tail_seg else None
            skipped = seg_no in dead
            while not skipped:
                scanner = FrameScanner(self.fs, path, offset, lsn, limit)
                try:
                    for f in scanner:
                        wanted = f.base_lsn + f.nrecs > from_lsn and not f.hole
                        if wanted and (not bad or (seg_no, f.offset) not in bad):
                            yield f, path
                        if f.base_lsn + f.nrecs - 1 >= last:
                            return
                except UNREADABLE as exc:
                    raise unreadable(path, exc, "log segment") from None
                stop = scanner.stop
                if stop.reason == "end":
                    lsn = scanner.next_lsn
                    break
                if (seg_no, stop.offset) not in skips:
                    raise corruption(path, stop.offset, stop.lsn, stop.reason)
                to = skips[(seg_no, stop.offset)]
                if to is None:
                    skipped = True
                    break
                offset, lsn = to
            k += 1
            if k < len(segs):
                # A segment that ends before the next one's first LSN is cut short.
                if not skipped and lsn != segs[k][1] and segs[k][0] not in gaps:
                    raise corruption(path, stop.offset, lsn, "short")
                lsn, offset = segs[k][1], HEADER_SIZE

    def runs(self) -> dict[str, RunInfo]:
        """Every run, with status derived now: running, finished, failed or crashed."""
        with self._mutex:
            runs = {rid: list(v) for rid, v in self._state.runs.items()}
        out = {}
        for rid, (begin, meta, end, last) in runs.items():
            if end is not None:
                status = end.get("status", "finished") if isinstance(end, dict) else "finished"
            elif self.fs.is_locked(run_lock_path(self.root, rid)):
                status = "running"
            else:
                status = "crashed"
            out[rid] = RunInfo(rid, begin, meta, status, end, last)
        return out

    def run_end(self, run_id: str) -> tuple[bool, dict | None]:
        """(whether `run_id` is in the store, its RUN_END body or None), as of the last refresh."""
        with self._mutex:
            run = self._state.runs.get(run_id)
        return run is not None, None if run is None else run[2]

    def stored_pages(self) -> dict:
        """The page catalog (CRC -> page refs) a checkpoint writer deduplicates against."""
        with self._mutex:
            return self._state.pages

    def checkpoints(self, run_id: str | None = None) -> list[CheckpointInfo]:
        """Complete checkpoints (end record durable, invariant 4) in LSN order."""
        with self._mutex:
            return [c for c in self._state.ckpts if run_id is None or c.run_id == run_id]

    def nearest_checkpoint(
        self,
        run_id: str,
        *,
        at_or_before_lsn: int | None = None,
        where: Callable[[dict], bool] | None = None,
    ) -> CheckpointInfo | None:
        """The latest complete checkpoint of `run_id` at or before an LSN whose meta satisfies `where`."""
        for c in reversed(self.checkpoints(run_id)):
            if at_or_before_lsn is not None and c.lsn > at_or_before_lsn:
                continue
            if where is None or where(c.meta):
                return c
        return None

    def _blobs_of(self, ckpt) -> tuple[str, CheckpointInfo, list]:
        """(ckpt_id, info, [(raw_len, page refs)] per blob) of a complete checkpoint.

        Raises:
            BadInputError: no complete checkpoint has that id.
        """
        ckpt_id = ckpt if isinstance(ckpt, str) else ckpt.ckpt_id
        with self._mutex:
            blobs = self._state.ckpt_blobs.get(ckpt_id)
            info = next((c for c in self._state.ckpts if c.ckpt_id == ckpt_id), None)
        if blobs is None or info is None:
            raise BadInputError(
                f"checkpoint {ckpt_id!r} is not in the store; list them with store.checkpoints()"
            )
        return ckpt_id, info, blobs

    def load_checkpoint(self, ckpt, into=None) -> tuple[dict, list[memoryview]]:
        """(meta, blobs) exactly as written; each blob one buffer; CorruptionError on a bad page.

        `ckpt` is a CheckpointInfo or a ckpt_id. `into`, if given, holds one writable buffer
        (or None) per blob to read that blob into, e.g. the memory of the live tensors it
        restores, which saves an allocation and a copy.
        """
        from .pages import read_blob

        ckpt_id, info, blobs = self._blobs_of(ckpt)
        targets = list(into) if into is not None else [None] * len(blobs)
        if len(targets) != len(blobs):
            raise BadInputError(
                f"checkpoint {ckpt_id!r} has {len(blobs)} blobs but {len(targets)} buffers were given"
            )
        views = [
            read_blob(self.fs, self.root, raw_len, refs, out)
            for (raw_len, refs), out in zip(blobs, targets, strict=True)
        ]
        return info.meta, views

    def verify_checkpoint(self, ckpt) -> Problem | None:
        """The first thing wrong with a checkpoint's pages (data or header), or None.

        Reads every page of it (what `load_checkpoint` would read, without keeping it), so a
        planner can choose another checkpoint before a replay stops on this one.
        """
        from .check import page_problem

        ckpt_id, info, blobs = self._blobs_of(ckpt)
        for _raw_len, refs in blobs:
            for ref in refs:
                problem = page_problem(self.fs, self.root, ref, info)
                if problem is not None:
                    return problem
        return None

    def records_after(self, run_id: str, lsn: int, kinds=None) -> Iterator[Record]:
        """Records of `run_id` with LSN > lsn, in LSN order."""
        return self.scan(from_lsn=lsn + 1, kinds=kinds, run_id=run_id)

    def check(self) -> list[Problem]:
        """Verify every frame and every checkpoint page; [] means clean. Writes nothing."""
        from .check import check_store

        with self._mutex:
            return check_store(self)

    # ---- writing ----------------------------------------------------------------------------

    def writer(self) -> LogWriter:
        """A new LogWriter on this store. StoreError if the store folder is not writable, or
        it was opened with damage (appending must wait for `florql check --repair`)."""
        if self._state.damage:
            raise StoreError(
                f"the store at {self.root} is damaged ({self._state.damage[0].describe()}); "
                "run `florql check --repair` before writing to it"
            )
        if not self.fs.writable(self.root) or not self.fs.writable(f"{self.root}/{LOG_DIR}"):
            raise StoreError(
                f"the store at {self.root} is read-only; fix its permissions or record into another --store"
            )
        w = LogWriter(self)
        self._writers.append(w)
        return w

    def commit(self, packed: list) -> int:
        """Append packed batches `[(entries, payload), ...]` as frames under the log lock,
        fsync, fold them into the state; returns the last durable LSN. For `LogWriter.flush`.

        Raises:
            StoreError: an I/O error; nothing of `packed` was acknowledged.
        """
        from .committer import commit

        with self._mutex:
            try:
                return commit(self, packed)
            except OSError as exc:
                raise write_failed(self.root, exc) from exc

    def close(self) -> None:
        """Close this store's writers (flushing them) and files."""
        writers, self._writers = self._writers, []
        for w in writers:
            w.close()
        if self._seg_handle is not None:
            self._seg_handle.close()
            self._seg_handle = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.root!r}, last_lsn={self.last_lsn})"


def _check_path(fs: FileSystem, root: str, create: bool, allow_damage: bool = False) -> None:
    if fs.exists(root) and not fs.isdir(root):
        raise StoreError(
            f"the store path {root} is a file, not a folder; pass a folder path (e.g. ./.florql)"
        )
    if not fs.exists(root):
        if not create:
            raise StoreError(
                f"there is no florql store at {root}; record a run first or check the --store path"
            )
        parent = posixpath.dirname(root) or "/"
        probe = parent
        while not fs.exists(probe) and probe != "/":
            probe = posixpath.dirname(probe)
        if not fs.isdir(probe) or not fs.writable(probe):
            raise StoreError(
                f"cannot create a store at {root}: {probe} is not a writable folder; choose another --store"
            )
        return
    if fs.exists(f"{root}/{MANIFEST}"):
        return
    foreign = [n for n in fs.listdir(root) if n not in _OURS]
    if foreign:
        raise StoreError(
            f"{root} is not a florql store (it holds {foreign[0]!r} and no MANIFEST); "
            "choose an empty folder or a new path for --store"
        )
    if _holds_data(fs, root):
        if allow_damage:
            return  # the MANIFEST is rebuilt from the segments in memory
        raise CorruptionError(
            f"the store at {root} has log data but no MANIFEST; run `florql check --repair` to "
            "rebuild it from the log segments (florql will not overwrite the data)",
            segment=f"{root}/{MANIFEST}",
        )
    if not create:
        raise StoreError(
            f"there is no florql store at {root}; record a run first or check the --store path"
        )
    if not fs.writable(root):
        raise StoreError(
            f"cannot create a store in {root}: the folder is not writable; choose another --store"
        )


def _holds_data(fs: FileSystem, root: str) -> bool:
    """Whether a folder without MANIFEST holds more than an interrupted `_init_store` leaves."""
    for d in (PAGES_DIR, INDEX_DIR):
        if fs.isdir(f"{root}/{d}") and fs.listdir(f"{root}/{d}"):
            return True
    log = f"{root}/{LOG_DIR}"
    if fs.isdir(log):
        return any(fs.size(f"{log}/{n}") > HEADER_SIZE for n in fs.listdir(log))
    return False


def _check_contents(fs: FileSystem, root: str) -> None:
    foreign = [n for n in fs.listdir(root) if n not in _OURS]
    if foreign:
        raise StoreError(
            f"the store at {root} holds a file florql did not write ({foreign[0]!r}); move it out of the store folder"
        )


def _init_store(fs: FileSystem, root: str) -> None:
    """Create an empty store; the MANIFEST, written last, is what makes it one."""
    try:
        fs.mkdir(root)
        # Two processes may create one store at once: the log lock makes one of them do it.
        lock = fs.lock(f"{root}/{LOCK}")
        assert lock is not None  # a blocking lock always returns its handle
    except PermissionError as exc:
        raise StoreError(
            f"cannot create a store at {root} ({exc.strerror}); choose a writable folder for --store"
        ) from None
    try:
        if not fs.exists(f"{root}/{MANIFEST}"):
            _init_locked(fs, root)
    finally:
        lock.release()


def _init_locked(fs: FileSystem, root: str) -> None:
    try:
        for d in (LOG_DIR, PAGES_DIR, INDEX_DIR, RUNS_DIR):
            fs.mkdir(f"{root}/{d}")
        store_id = uuid.uuid4().bytes
        seg = f"{root}/{segment_name(1)}"
        fs.write_file(seg, encode_header(1, store_id, 1))
        fs.fsync(seg)
        fs.fsync_dir(f"{root}/{LOG_DIR}")
        fs.fsync_dir(root)
        parent = posixpath.dirname(root)
        if parent and parent != root:
            fs.fsync_dir(parent)
        write_manifest(fs, root, Manifest(store_id=store_id, segments=[[1, 1]], index=None))
    except PermissionError as exc:
        raise StoreError(
            f"cannot create a store at {root} ({exc.strerror}); choose a writable folder for --store"
        ) from None
