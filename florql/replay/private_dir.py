"""A folder only this user can enter, held by a file descriptor, and the peers of its sockets.

The warm replay server (warm.py) keeps its socket, pid, lock and log files in a folder under
the shared temporary folder, where another local user could plant or swap a symbolic link
between a check and a use. So the folder is checked once, on a descriptor opened without
following links, and every later use goes through that descriptor, never through the path
again: files are opened with `dir_fd=` and `O_NOFOLLOW`, and sockets, which Linux binds and
connects only by path, use `/proc/self/fd/N/NAME`, a path that resolves through the open
descriptor to the folder that was checked. A socket's peer is checked too (`SO_PEERCRED`):
requests are taken only from this user's processes, and sent only to them.

Linux only (O_DIRECTORY|O_NOFOLLOW semantics, `/proc/self/fd`, SO_PEERCRED).

>>> import tempfile
>>> d = PrivateDir.open(os.path.join(tempfile.mkdtemp(), "p"))
>>> os.fstat(d.fd).st_mode & 0o777 == 0o700, d.sock_path("a.sock").startswith("/proc/self/fd/")
(True, True)
>>> d.close()
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PrivateDir:
    """An open folder that belongs to this user and that nobody else may enter."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str) -> PrivateDir:
        """Create `path` (mode 0700) unless it exists, open it without following a link, and
        check on the descriptor that this user owns it and nobody else may enter it.

        Raises:
            OSError: `path` is a link, not a folder, another user's, or open to others.
        """
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)  # mkdir never follows a link in its last part
        try:
            fd = os.open(path, _NOFOLLOW_DIR)
        except OSError as e:
            raise OSError(f"{path} is not a private folder of this user ({e.strerror})") from None
        problem = not_private(os.fstat(fd))
        if problem:
            os.close(fd)
            raise OSError(f"{path} is not a private folder of this user: {problem}")
        return cls(path, fd)

    def sock_path(self, name: str) -> str:
        """A path to `name` in this folder that resolves through the descriptor."""
        return f"/proc/self/fd/{self.fd}/{name}"

    def open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        """`os.open` of `name` in this folder, never following a link."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def inode(self, name: str) -> int:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_ino

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def size(self, name: str) -> int:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def not_private(st: os.stat_result) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o077:
        return f"mode {stat.S_IMODE(st.st_mode):o} lets others in"
    return None


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_is_me(conn: socket.socket) -> bool:
    """Whether the other end of `conn` runs as this user (SO_PEERCRED)."""
    try:
        return peer_uid(conn) == os.getuid()
    except OSError:
        return False
