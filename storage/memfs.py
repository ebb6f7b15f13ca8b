"""MemFS: files in memory with a crash model (what fsync made durable survives, the rest may not).

>>> fs = MemFS(); fs.mkdir("/d"); fs.write_file("/d/f", b"x"); fs.fsync("/d/f")
>>> fs.crash("drop").exists("/d/f")       # neither /d nor its entry f was fsynced into its folder
False
"""

from __future__ import annotations

import errno
import posixpath
import random
import threading

from .fsbase import AppendHandle, FileSystem, LockHandle


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
    appends were, "sectors" keeps a random subset of the unsynced appended sectors (unordered
    write-back; the rest read as zeros), "keep" keeps everything (a process crash: the page
    cache survives).
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
        if mode not in ("drop", "garble", "sectors", "keep"):
            raise ValueError(f"crash mode must be drop, garble, sectors or keep, not {mode!r}")
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
            elif mode == "sectors" and extra > 0 and inode.data.startswith(inode.synced):
                # Write-back is unordered: each 512-byte sector of the unsynced append reached
                # the disk or not (reads as zeros), and the file may end at any sector.
                tail = inode.data[len(inode.synced) :]
                end = rng.choice([len(tail), rng.randint(0, len(tail))])
                for at in range(0, end, 512):
                    chunk = tail[at : min(at + 512, end)]
                    new.data += chunk if rng.random() < 0.5 else bytes(len(chunk))
        new.synced = bytes(new.data)
        return new
