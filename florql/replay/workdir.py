"""The private temporary folder of one replay request: task files, spliced code, worker logs.

A request creates `$TMPDIR/florql-replay-XXXXXXXX` (mode 0700, `tempfile.mkdtemp`) and holds an
exclusive `flock` on its `.owner` file for as long as it runs. The folder is removed when the
request ends, also when it is interrupted (Ctrl-C, an exception), except after a failed replay,
whose folder is kept for the user to read (the error message names it; a `KEPT` marker says
so). A request killed outright (SIGKILL, a lost terminal) cannot clean up, so every new request
first sweeps this user's `florql-replay-*` folders whose `.owner` lock nobody holds: the lock,
not a pid, says the owner is gone (pids are reused; a lock dies with its holder). Kept folders
are swept once they are older than `KEEP_SECONDS`.

>>> with Workdir() as wd:
...     inside = os.path.isdir(wd.path)
>>> inside, os.path.exists(wd.path)
(True, False)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import time

PREFIX = "florql-replay-"
OWNER = ".owner"
KEPT = "KEPT"
KEEP_SECONDS = 7 * 24 * 3600.0
LEGACY_SECONDS = 24 * 3600.0


class Workdir:
    """A replay request's private folder; a context manager that removes it on exit unless
    `keep()` was called."""

    def __init__(self, parent: str | None = None) -> None:
        self.parent = parent or tempfile.gettempdir()
        self.path = ""
        self._lock_fd = -1
        self._kept = False

    def __enter__(self) -> Workdir:
        sweep(self.parent)
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=self.parent)
        # Locked before it gets its name, so a sweeper never finds it unlocked.
        pending = os.path.join(self.path, OWNER + ".new")
        self._lock_fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.rename(pending, os.path.join(self.path, OWNER))
        return self

    def keep(self) -> None:
        """Leave the folder in place (a failed replay: its logs say why)."""
        self._kept = True
        with open(os.path.join(self.path, KEPT), "w", encoding="utf-8") as f:
            f.write("kept after a failed replay; safe to delete\n")

    def __exit__(self, *exc: object) -> None:
        if not self._kept:
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)  # after the removal: a sweeper never sees it half-deleted
        self._lock_fd = -1


def sweep(parent: str | None = None, now: float | None = None) -> list[str]:
    """Remove this user's abandoned replay folders in `parent`; return the paths removed.

    Abandoned: no process holds the folder's `.owner` lock, and it is not a kept folder younger
    than `KEEP_SECONDS`. Folders of other users, and anything that is not a real folder
    (a symlink planted under the prefix), are left alone.
    """
    parent = parent or tempfile.gettempdir()
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if name.startswith(PREFIX) and _abandoned(path, now):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _abandoned(path: str, now: float) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    with contextlib.suppress(OSError):
        kept = os.lstat(os.path.join(path, KEPT))
        return now - kept.st_mtime > KEEP_SECONDS
    try:
        fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        # No lock file: one caught between mkdtemp and its lock (young), or a folder of an
        # older florql, which may still be running: only a day-old one is surely abandoned.
        return now - st.st_mtime > LEGACY_SECONDS
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its request is still running
    finally:
        os.close(fd)
    return True
