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

from .faultyfs import FaultyFS
from .fsbase import AppendHandle, FileSystem, InjectedFault, LockHandle
from .memfs import MemFS
from .realfs import RealFS

__all__ = [
    "AppendHandle",
    "FaultyFS",
    "FileSystem",
    "InjectedFault",
    "LockHandle",
    "MemFS",
    "RealFS",
]
