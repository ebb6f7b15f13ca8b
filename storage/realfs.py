"""RealFS: real files through `os`; locks are `fcntl.flock`, released by the kernel when a
process dies (even by SIGKILL), which is what run liveness relies on.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> fs = RealFS(); h = fs.open_append(d + "/f"); h.write(b"abc"), h.write(b"de"); h.close()
(0, 3)
>>> fs.read(d + "/f", 1, 3)
b'bcd'
"""

from __future__ import annotations

import fcntl
import os

from .fsbase import AppendHandle, FileSystem, LockHandle


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
