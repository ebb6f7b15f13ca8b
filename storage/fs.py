"""The file-system interface: everything in storage reaches files only through it.

Three implementations, as LevelDB's `Env` does it, so tests can swap the disk:

- `RealFS`: real files, `fcntl.flock` for locks (released by the kernel when a process dies).
- `MemFS`: in memory; tracks which bytes and which folder entries were made durable by
  fsync, so `crash()` can drop (or garble) exactly what a power cut would lose.
- `FaultyFS`: wraps a MemFS and fails at I/O operation N (tearing that write), after which every
  operation fails until the test calls `crash()`.

Paths are plain strings; stores join them with "/".

>>> fs = MemFS()
>>> fs.mkdir("/s")
>>> h = fs.open_append("/s/a")
>>> h.write(b"hello"), h.write(b"!")
(0, 5)
>>> h.fsync(); h.write(b" unsynced") and None
>>> fs.read("/s/a")
b'hello! unsynced'
>>> after = fs.crash("drop")          # the folder entry was never fsynced: the file is gone
>>> after.exists("/s/a")
False
>>> fs.fsync_dir("/"); fs.fsync_dir("/s"); fs.crash("drop").read("/s/a")
b'hello!'
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import random
import threading
from abc import ABC, abstractmethod


class InjectedFault(OSError):
    """Raised by FaultyFS at its chosen operation (and after it, until `crash()`)."""


class AppendHandle(ABC):
    """An open file that only grows: `write` returns the offset at which the data starts."""

    @abstractmethod
    def write(self, data) -> int: ...

    @abstractmethod
    def fsync(self) -> None: ...

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


class LockHandle(ABC):
    """An exclusive advisory lock, held until `release()` (or the process dies)."""

    @abstractmethod
    def release(self) -> None: ...


class FileSystem(ABC):
    """The operations the store needs; all paths absolute or store-joined strings."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def isdir(self, path: str) -> bool: ...

    @abstractmethod
    def mkdir(self, path: str) -> None:
        """Create a folder and missing parents; no error if it exists."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]: ...

    @abstractmethod
    def size(self, path: str) -> int: ...

    @abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Up to `length` bytes from `offset` (fewer at the end of the file)."""

    @abstractmethod
    def read_into(self, path: str, offset: int, buf: memoryview) -> int:
        """Fill `buf` from `offset`; returns the number of bytes read."""

    @abstractmethod
    def write_file(self, path: str, data) -> None:
        """Create or replace a file's contents (not durable until fsync)."""

    @abstractmethod
    def open_append(self, path: str, *, truncate: bool = False) -> AppendHandle: ...

    @abstractmethod
    def fsync(self, path: str) -> None: ...

    @abstractmethod
    def fsync_dir(self, path: str) -> None: ...

    @abstractmethod
    def rename(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def truncate(self, path: str, size: int) -> None: ...

    @abstractmethod
    def lock(self, path: str, *, blocking: bool = True) -> LockHandle | None:
        """Take an exclusive lock on `path` (created if missing); None if busy and not blocking."""

    @abstractmethod
    def is_locked(self, path: str) -> bool:
        """Whether someone holds the lock on `path`; never creates the file."""

    @abstractmethod
    def writable(self, path: str) -> bool:
        """Whether new files can be created in folder `path`."""


# --------------------------------------------------------------------------------------------
# Real files


class _RealAppend(AppendHandle):
    def __init__(self, path: str, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(path, flags, 0o644)
        self._size = os.fstat(self._fd).st_size

    def write(self, data) -> int:
        # Another process may have appended (or a writer truncated) since: O_APPEND writes at
        # the true end, so ask the file where that is. Callers hold the log lock.
        start = self._size = os.fstat(self._fd).st_size
        view = memoryview(data).cast("B")
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._size += n
        return start

    def fsync(self) -> None:
        os.fsync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _RealLock(LockHandle):
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class RealFS(FileSystem):
    """Real files through `os`; locks are `fcntl.flock` on the lock file."""

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def mkdir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - offset)
            chunks = []
            while length > 0:
                chunk = os.pread(fd, length, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
                length -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)

    def read_into(self, path: str, offset: int, buf: memoryview) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            done = 0
            while done < len(buf):
                n = os.preadv(fd, [buf[done:]], offset + done)
                if n == 0:
                    break
                done += n
            return done
        finally:
            os.close(fd)

    def write_file(self, path: str, data) -> None:
        h = _RealAppend(path, truncate=True)
        try:
            h.write(data)
        finally:
            h.close()

    def open_append(self, path: str, *, truncate: bool = False) -> AppendHandle:
        return _RealAppend(path, truncate)

    def fsync(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, path: str) -> None:
        self.fsync(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def lock(self, path: str, *, blocking: bool = True) -> LockHandle | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return _RealLock(fd)

    def is_locked(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock if it got one
        return False

    def writable(self, path: str) -> bool:
        return os.access(path, os.W_OK | os.X_OK)


# --------------------------------------------------------------------------------------------
# In memory


class _Inode:
    __slots__ = ("data", "synced")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = b""  # contents as of the last fsync


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "No such file or directory", path)


class _MemAppend(AppendHandle):
    def __init__(self, fs: MemFS, inode: _Inode) -> None:
        self._fs = fs
        self._inode = inode

    def write(self, data) -> int:
        with self._fs._mutex:
            start = len(self._inode.data)
            self._inode.data += memoryview(data).cast("B")
            return start

    def fsync(self) -> None:
        with self._fs._mutex:
            self._inode.synced = bytes(self._inode.data)

    def size(self) -> int:
        return len(self._inode.data)

    def close(self) -> None:
        pass


class _MemLock(LockHandle):
    def __init__(self, fs: MemFS, path: str, token: object) -> None:
        self._fs, self._path, self._token = fs, path, token

    def release(self) -> None:
        with self._fs._lock_cond:
            if self._fs._locks.get(self._path) is self._token:
                del self._fs._locks[self._path]
                self._fs._lock_cond.notify_all()


class MemFS(FileSystem):
    """Files in memory with a crash model: what was fsynced survives, the rest may not.

    A file's bytes are durable after `fsync(file)`; its name (creation, rename, removal) after
    `fsync_dir(parent)`. `crash(mode)` returns the file system a reboot would find:
    "drop" loses every unsynced byte and name, "garble" also leaves random bytes where unsynced
    appends were, "keep" keeps everything (a process crash: the page cache survives).
    """

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._files: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}
        self._durable_files: dict[str, _Inode] = {}
        self._durable_dirs: set[str] = {"/"}
        self._locks: dict[str, object] = {}
        self._lock_cond = threading.Condition()
        self.read_only_dirs: set[str] = set()

    @staticmethod
    def _norm(path: str) -> str:
        return (
            posixpath.normpath("/" + path) if not path.startswith("/") else posixpath.normpath(path)
        )

    def _inode(self, path: str) -> _Inode:
        inode = self._files.get(self._norm(path))
        if inode is None:
            raise _missing(path)
        return inode

    def _check_parent(self, path: str) -> str:
        p = self._norm(path)
        parent = posixpath.dirname(p)
        if parent not in self._dirs:
            raise _missing(path)
        if parent in self.read_only_dirs:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return p

    def exists(self, path: str) -> bool:
        p = self._norm(path)
        with self._mutex:
            return p in self._files or p in self._dirs

    def isdir(self, path: str) -> bool:
        with self._mutex:
            return self._norm(path) in self._dirs

    def mkdir(self, path: str) -> None:
        p = self._norm(path)
        with self._mutex:
            if p in self._files:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            if p in self._dirs:
                return
            self.mkdir(posixpath.dirname(p))
            self._check_parent(p)
            self._dirs.add(p)

    def listdir(self, path: str) -> list[str]:
        p = self._norm(path)
        with self._mutex:
            if p not in self._dirs:
                raise _missing(path)
            names = [
                n
                for n in list(self._files) + list(self._dirs)
                if n != p and posixpath.dirname(n) == p
            ]
            return sorted(posixpath.basename(n) for n in names)

    def size(self, path: str) -> int:
        with self._mutex:
            return len(self._inode(path).data)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._mutex:
            data = self._inode(path).data
            end = len(data) if length is None else min(len(data), offset + length)
            return bytes(data[offset:end])

    def read_into(self, path: str, offset: int, buf: memoryview) -> int:
        with self._mutex:
            data = self._inode(path).data
            n = max(0, min(len(buf), len(data) - offset))
            buf[:n] = data[offset : offset + n]
            return n

    def write_file(self, path: str, data) -> None:
        with self._mutex:
            p = self._check_parent(path)
            inode = self._files.get(p) or _Inode()
            inode.data = bytearray(memoryview(data).cast("B"))
            self._files[p] = inode

    def open_append(self, path: str, *, truncate: bool = False) -> AppendHandle:
        with self._mutex:
            p = self._norm(path)
            inode = self._files.get(p)
            if inode is None:
                self._check_parent(p)
                inode = self._files[p] = _Inode()
            if truncate:
                inode.data = bytearray()
            return _MemAppend(self, inode)

    def fsync(self, path: str) -> None:
        with self._mutex:
            inode = self._inode(path)
            inode.synced = bytes(inode.data)

    def fsync_dir(self, path: str) -> None:
        p = self._norm(path)
        with self._mutex:
            if p not in self._dirs:
                raise _missing(path)
            for name in [n for n in self._durable_files if posixpath.dirname(n) == p]:
                if self._files.get(name) is not self._durable_files[name]:
                    del self._durable_files[name]
            for name in [n for n in self._durable_dirs if n != "/" and posixpath.dirname(n) == p]:
                if name not in self._dirs:
                    self._durable_dirs.discard(name)
            for name, inode in self._files.items():
                if posixpath.dirname(name) == p:
                    self._durable_files[name] = inode
            for name in self._dirs:
                if name != "/" and posixpath.dirname(name) == p:
                    self._durable_dirs.add(name)

    def rename(self, src: str, dst: str) -> None:
        with self._mutex:
            s, d = self._norm(src), self._check_parent(dst)
            self._files[d] = self._inode(s)
            del self._files[s]

    def remove(self, path: str) -> None:
        with self._mutex:
            self._inode(path)
            del self._files[self._norm(path)]

    def truncate(self, path: str, size: int) -> None:
        with self._mutex:
            inode = self._inode(path)
            del inode.data[size:]

    def lock(self, path: str, *, blocking: bool = True) -> LockHandle | None:
        p = self._norm(path)
        with self._mutex:
            if p not in self._files:
                self.open_append(p)
        token = object()
        with self._lock_cond:
            while p in self._locks:
                if not blocking:
                    return None
                self._lock_cond.wait()
            self._locks[p] = token
        return _MemLock(self, p, token)

    def is_locked(self, path: str) -> bool:
        with self._lock_cond:
            return self._norm(path) in self._locks

    def writable(self, path: str) -> bool:
        return self._norm(path) not in self.read_only_dirs

    def crash(self, mode: str = "drop", seed: int = 0) -> MemFS:
        """The file system after a power cut now (locks are gone; see the class docstring)."""
        if mode not in ("drop", "garble", "keep"):
            raise ValueError(f"crash mode must be drop, garble or keep, not {mode!r}")
        rng = random.Random(seed)
        out = MemFS()
        with self._mutex:
            if mode == "keep":
                files, dirs = self._files, self._dirs
            else:
                files, dirs = self._durable_files, self._durable_dirs
            copies: dict[int, _Inode] = {}
            for name, inode in files.items():
                if id(inode) not in copies:
                    copies[id(inode)] = self._crashed_inode(inode, mode, rng)
                out._files[name] = copies[id(inode)]
            out._dirs = set(dirs)
            # A name whose folder is gone is gone too.
            out._dirs = {d for d in out._dirs if self._ancestors_in(d, out._dirs)}
            out._files = {n: i for n, i in out._files.items() if posixpath.dirname(n) in out._dirs}
            out._durable_files = dict(out._files)
            out._durable_dirs = set(out._dirs)
        return out

    @staticmethod
    def _ancestors_in(d: str, dirs: set[str]) -> bool:
        while d != "/":
            d = posixpath.dirname(d)
            if d not in dirs:
                return False
        return True

    @staticmethod
    def _crashed_inode(inode: _Inode, mode: str, rng: random.Random) -> _Inode:
        new = _Inode()
        if mode == "keep":
            new.data = bytearray(inode.data)
        else:
            new.data = bytearray(inode.synced)
            extra = len(inode.data) - len(inode.synced)
            if mode == "garble" and extra > 0 and inode.data.startswith(inode.synced):
                # Part of an unsynced append may have reached the disk intact, then garbage.
                keep = rng.randint(0, extra)
                new.data += inode.data[len(inode.synced) : len(inode.synced) + keep]
                junk = rng.randint(0, extra - keep)
                new.data += bytes(rng.getrandbits(8) for _ in range(min(junk, 4096)))
        new.synced = bytes(new.data)
        return new


# --------------------------------------------------------------------------------------------
# Fault injection


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
    `ops` is how many operations have run so far.
    """

    def __init__(
        self, base: MemFS | None = None, *, fail_at: int | None = None, count_reads: bool = False
    ) -> None:
        self.base = base if base is not None else MemFS()
        self.fail_at = fail_at
        self.count_reads = count_reads
        self.ops = 0
        self.failed = False

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
        return self.base.read(path, offset, length)

    def read_into(self, path: str, offset: int, buf: memoryview) -> int:
        self._op("read_into")
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

    def remove(self, path: str) -> None:
        self._op("remove")
        self.base.remove(path)

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
