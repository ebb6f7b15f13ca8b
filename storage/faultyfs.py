"""FaultyFS: a MemFS that fails at I/O operation N, tearing that write, then fails every
operation until the test calls `crash()` (SQLite's and LevelDB's fault-injection tests).

>>> fs = FaultyFS(fail_at=2); fs.mkdir("/d")
>>> fs.write_file("/d/f", b"0123")
Traceback (most recent call last):
...
florql_storage.fsbase.InjectedFault: [Errno 5] injected fault at operation 2 (write_file)
>>> fs.base.read("/d/f")      # half of the failed write reached the file
b'01'
"""

from __future__ import annotations

import errno

from .fsbase import AppendHandle, FileSystem, InjectedFault, LockHandle
from .memfs import MemFS

_WRITES = frozenset(
    {
        "mkdir",
        "write_file",
        "open_append",
        "fsync",
        "fsync_dir",
        "rename",
        "remove",
        "truncate",
        "append",
        "append_fsync",
    }
)


class _FaultyAppend(AppendHandle):
    def __init__(self, fs: FaultyFS, inner: AppendHandle) -> None:
        self._fs, self._inner = fs, inner

    def write(self, data) -> int:
        if self._fs._tick("append"):
            # Tear the write: part of it reaches the file before the failure.
            view = memoryview(data).cast("B")
            self._inner.write(view[: len(view) // 2])
            raise self._fs._fault("append")
        return self._inner.write(data)

    def fsync(self) -> None:
        self._fs._op("append_fsync")
        self._inner.fsync()

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class FaultyFS(FileSystem):
    """A MemFS that fails at operation number `fail_at` (1-based) and at every one after it.

    `count_reads=False` counts only operations that change something, which is what crash loops
    over a workload step through; `True` also counts reads (to crash during recovery).
    `ops` is how many operations have run so far. Paths in `unreadable` fail every read with
    PermissionError, as a file with mode 000 does for a user other than root (tests run as
    root, where chmod cannot make a file unreadable).
    """

    def __init__(
        self, base: MemFS | None = None, *, fail_at: int | None = None, count_reads: bool = False
    ) -> None:
        self.base = base if base is not None else MemFS()
        self.fail_at = fail_at
        self.count_reads = count_reads
        self.ops = 0
        self.failed = False
        self.unreadable: set[str] = set()

    def _readable(self, path: str) -> None:
        if self.base._norm(path) in {self.base._norm(p) for p in self.unreadable}:
            raise PermissionError(errno.EACCES, "Permission denied", path)

    def _tick(self, name: str) -> bool:
        if self.failed:
            raise self._fault(name)
        if name not in _WRITES and not self.count_reads:
            return False
        self.ops += 1
        if self.fail_at is not None and self.ops >= self.fail_at:
            self.failed = True
            return True
        return False

    def _fault(self, name: str) -> InjectedFault:
        return InjectedFault(errno.EIO, f"injected fault at operation {self.ops} ({name})")

    def _op(self, name: str) -> None:
        if self._tick(name):
            raise self._fault(name)

    def crash(self, mode: str = "drop", seed: int = 0) -> MemFS:
        """The underlying MemFS after a crash (see `MemFS.crash`)."""
        return self.base.crash(mode, seed)

    def exists(self, path: str) -> bool:
        self._op("exists")
        return self.base.exists(path)

    def isdir(self, path: str) -> bool:
        self._op("isdir")
        return self.base.isdir(path)

    def mkdir(self, path: str) -> None:
        self._op("mkdir")
        self.base.mkdir(path)

    def listdir(self, path: str) -> list[str]:
        self._op("listdir")
        return self.base.listdir(path)

    def size(self, path: str) -> int:
        self._op("size")
        return self.base.size(path)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        self._op("read")
        self._readable(path)
        return self.base.read(path, offset, length)

    def read_into(self, path: str, offset: int, buf: memoryview) -> int:
        self._op("read_into")
        self._readable(path)
        return self.base.read_into(path, offset, buf)

    def write_file(self, path: str, data) -> None:
        if self._tick("write_file"):
            view = memoryview(data).cast("B")
            self.base.write_file(path, view[: len(view) // 2])
            raise self._fault("write_file")
        self.base.write_file(path, data)

    def open_append(self, path: str, *, truncate: bool = False) -> AppendHandle:
        self._op("open_append")
        return _FaultyAppend(self, self.base.open_append(path, truncate=truncate))

    def fsync(self, path: str) -> None:
        self._op("fsync")
        self.base.fsync(path)

    def fsync_dir(self, path: str) -> None:
        self._op("fsync_dir")
        self.base.fsync_dir(path)

    def rename(self, src: str, dst: str) -> None:
        self._op("rename")
        self.base.rename(src, dst)
        # The mode travels with the file; the name it leaves is free for a readable file.
        marked = {self.base._norm(p) for p in self.unreadable}
        self.unreadable.discard(dst)
        if self.base._norm(src) in marked:
            self.unreadable = {
                p for p in self.unreadable if self.base._norm(p) != self.base._norm(src)
            }
            self.unreadable.add(dst)

    def remove(self, path: str) -> None:
        self._op("remove")
        self.base.remove(path)
        self.unreadable = {
            p for p in self.unreadable if self.base._norm(p) != self.base._norm(path)
        }

    def truncate(self, path: str, size: int) -> None:
        self._op("truncate")
        self.base.truncate(path, size)

    def lock(self, path: str, *, blocking: bool = True) -> LockHandle | None:
        self._op("lock")
        return self.base.lock(path, blocking=blocking)

    def is_locked(self, path: str) -> bool:
        self._op("is_locked")
        return self.base.is_locked(path)

    def writable(self, path: str) -> bool:
        return self.base.writable(path)
