"""The file-system interface the store is written against (see fs.py for the implementations).

>>> issubclass(InjectedFault, OSError)
True
"""

from __future__ import annotations

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
