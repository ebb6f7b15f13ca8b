"""A copy-on-write view of the file system: what replayed code sees instead of the user's files.

The overlay maps every path it is asked about to the path an operation should really use:

- a write of path P lands in `scratch/fs/<absolute P>`; the first write of a file that already
  exists and is kept (append, `r+`, chmod) copies it there first;
- a read of P sees the scratch copy when there is one, else the real file, unless the replay
  deleted P (or a folder above it): the real file is left where it is and hidden from the
  replay for good (a "whiteout", kept in memory); what the replay creates there later lives
  in scratch only (a folder deleted and made again shows none of the real entries);
- listings merge the real folder (minus whiteouts) with its scratch counterpart.

Paths under a "real" root (the store, the scratch area itself, fresh temporary files) are used
as they are. The overlay calls the unpatched `os`, `io` and `shutil` functions it captured at
import, so it works the same while `florql.replay.sandbox` has patched them.

Invariants:
1. Nothing outside a real root is ever created, changed or removed through the overlay.
2. After a write of P through the overlay, a read of P through it sees that write.
3. After a delete of P through the overlay, P and everything below it do not exist for reads
   through it until the replay creates P again.

>>> import tempfile
>>> from pathlib import Path
>>> real, scratch = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> a = os.path.join(real, "a.txt")
>>> _ = Path(a).write_text("mine")
>>> ov = Overlay(scratch)
>>> with open(ov.write_path(a, keep=True), "a") as f:
...     _ = f.write("+replay")
>>> Path(ov.read_path(a)).read_text(), Path(a).read_text()
('mine+replay', 'mine')
>>> ov.unlink(a)
>>> ov.exists(a), os.listdir(real), ov.listdir(real)
(False, ['a.txt'], [])
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from typing import Any

# Captured before any patching, so that the overlay itself never goes through the sandbox.
_open = io.open
_stat = os.stat
_lstat = os.lstat
_mkdir = os.mkdir
_listdir = os.listdir
_scandir = os.scandir
_rename = os.rename
_unlink = os.unlink
_rmdir = os.rmdir
_chmod = os.chmod
_readlink = os.readlink
_symlink = os.symlink


READ_LIMIT = 10_000  # real paths remembered as read (a dataset alone may read far more)


def _error(code: int, path: Any) -> OSError:
    """The OSError the real call would raise for `path` (named as the caller named it)."""
    return OSError(code, os.strerror(code), path)


def _chain(a: str) -> Iterator[str]:
    """`a`, its parent, and so on up to the root."""
    while True:
        yield a
        parent = os.path.dirname(a)
        if parent == a:
            return
        a = parent


def _lexists(p: str) -> bool:
    try:
        _lstat(p)
    except (OSError, ValueError):
        return False
    return True


def _islink(p: str) -> bool:
    try:
        return stat.S_ISLNK(_lstat(p).st_mode)
    except (OSError, ValueError):
        return False


def _remove_all(p: str) -> None:
    """Remove scratch path `p` and everything below it (shutil.rmtree would go through the
    patched functions, which map scratch paths back into the overlay)."""
    if _islink(p) or not _isdir(p):
        _unlink(p)
        return
    with _scandir(p) as it:
        entries = list(it)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            _remove_all(e.path)
        else:
            _unlink(e.path)
    _rmdir(p)


def _isdir(p: str) -> bool:
    try:
        return stat.S_ISDIR(_stat(p).st_mode)
    except (OSError, ValueError):
        return False


class Overlay:
    """The copy-on-write view; see the module docstring for the rules.

    Args:
        scratch: a folder this overlay owns; its files go under `scratch/fs`.
        real: paths (files or folders) used in place, never redirected.
    """

    def __init__(self, scratch: str, real: Iterable[str] = ()) -> None:
        self.scratch = os.path.abspath(scratch)
        self.root = os.path.join(self.scratch, "fs")
        os.makedirs(self.root, exist_ok=True)  # made before the sandbox patches anything
        self._real: set[str] = set()
        for p in [self.scratch, *real]:
            self.add_real(p)
        self._gone: set[str] = set()  # whiteouts: deleted by the replay, real file kept
        self.touched = False  # nothing written or deleted yet: every read is a real read
        self.real_reads: set[str] = set()  # real files and folders the replay read

    # --- where a path lives ------------------------------------------------------------------

    def add_real(self, path: str) -> None:
        """Use `path` and everything below it in place from now on."""
        a = os.path.abspath(path)
        self._real.add(a)
        self._real.add(os.path.realpath(a))

    def is_real(self, path: str) -> bool:
        """Whether `path` lies under a real root."""
        return any(x in self._real for x in _chain(self.user_path(path)))

    def user_path(self, path: str) -> str:
        """The absolute path `path` stands for in the replay's view: a path into the scratch
        area (a folder made current there, a path the overlay handed out) is the user's path
        it holds the replay's version of, so that mapping it again gives the same answer."""
        return self._translated(os.path.abspath(path))

    def _translated(self, a: str) -> str:
        if a == self.root:
            return os.sep
        if a.startswith(self.root + os.sep):
            return a[len(self.root) :]
        return a

    def scratch_of(self, a: str) -> str:
        """Where absolute path `a` lives in the scratch area."""
        return self.root + a

    def hidden(self, a: str) -> bool:
        """Whether the real `a` is hidden from the replay: it deleted or replaced `a` or a
        folder above it (what it made there since lives in scratch)."""
        if not self._gone:
            return False
        return any(x in self._gone for x in _chain(a))

    def _real_visible(self, a: str) -> bool:
        return not self.hidden(a) and _lexists(a)

    def exists(self, path: str) -> bool:
        """Whether `path` exists in the replay's view."""
        a = self.user_path(path)
        return self._real_visible(a) or _lexists(self.scratch_of(a))

    def isdir(self, path: str) -> bool:
        """Whether `path` is a folder in the replay's view."""
        a = self.user_path(path)
        s = self.scratch_of(a)
        if _lexists(s):
            return _isdir(s)
        return not self.hidden(a) and _isdir(a)

    # --- reads and writes --------------------------------------------------------------------

    def read_path(self, path: str) -> str:
        """The path to read or inspect in place of `path`."""
        b = os.path.abspath(path)
        a = self._translated(b)
        if self.is_real(a):
            return path
        if self.touched:
            s = self.scratch_of(a)
            if self.hidden(a):
                return s  # a missing scratch path: "no such file"
            # The side holding the nearest existing ancestor decides, so that the OS answers as
            # it would for the replay's view (a file in scratch where a folder is expected:
            # ENOTDIR).
            for x in _chain(a):
                if _lexists(self.scratch_of(x)):
                    return s
                if _lexists(x):
                    break
        self.note_read(a)
        return path if a == b else a

    def note_read(self, a: str) -> None:
        """Remember that the replay read real path `a` (absolute), up to READ_LIMIT paths."""
        if len(self.real_reads) < READ_LIMIT:
            self.real_reads.add(a)

    def folder_path(self, path: str) -> str:
        """The folder to make current in place of `path`: the real one while it is visible,
        else the replay's own (relative paths then resolve inside the scratch area, and
        `user_path` maps them back)."""
        a = self.user_path(path)
        if self.is_real(a) or (not self.hidden(a) and _isdir(a)):
            return a
        s = self.scratch_of(a)
        if _isdir(s):
            return s
        raise _error(errno.ENOTDIR, path) if self.exists(a) else self._missing(a, path)

    def write_path(self, path: str, keep: bool) -> str:
        """The path to create or change in place of `path`; makes its scratch folder.

        `keep`: the operation keeps existing content (append, `r+`, chmod), so a real file not
        yet in scratch is copied there first. Raises FileNotFoundError when the folder of
        `path` does not exist in the replay's view.
        """
        a = self.user_path(path)
        if self.is_real(a):
            return path
        self.touched = True
        s = self.scratch_of(a)
        if not _lexists(s):
            if self.isdir(a):
                # its entries stay merged in the view: no copy; the OS then answers as for the
                # real folder (open for writing: IsADirectoryError; chmod, O_TMPFILE: fine)
                self._materialize(a)
                return s
            self._make_parent(a, path)
            if keep and self._real_visible(a):
                self._copy_up(a, s)
        return s

    def _make_parent(self, a: str, path: str) -> None:
        parent = os.path.dirname(a)
        if not self.isdir(parent):
            raise self._missing(a, path)
        self._materialize(parent)

    def _missing(self, a: str, path: str) -> OSError:
        """The error for `a`, missing in the view: ENOTDIR when an existing folder above it
        is in fact a file, else ENOENT."""
        for x in _chain(os.path.dirname(a)):
            if self.exists(x):
                return _error(errno.ENOENT if self.isdir(x) else errno.ENOTDIR, path)
        return _error(errno.ENOENT, path)

    def _materialize(self, a: str) -> None:
        """Make the scratch folder of `a`, a folder in the replay's view, and its parents."""
        missing = []
        for x in _chain(a):
            if _isdir(self.scratch_of(x)):
                break
            missing.append(x)
        for x in reversed(missing):
            with contextlib.suppress(FileExistsError):
                _mkdir(self.scratch_of(x))

    def _copy_up(self, a: str, s: str) -> None:
        """Copy the visible content of real `a` to scratch path `s` (a folder: its whole visible
        tree, which only a rename needs)."""
        if _islink(a):
            if not _lexists(s):
                _symlink(_readlink(a), s)
        elif _isdir(a):
            if not _lexists(s):
                _mkdir(s)
            for name in _listdir(a):
                child = os.path.join(a, name)
                if child not in self._gone:
                    self._copy_up(child, self.scratch_of(child))
        elif not _lexists(s):
            with _open(a, "rb") as src, _open(s, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            _chmod(s, stat.S_IMODE(_stat(a).st_mode))

    # --- operations that change the view ------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        a = self.user_path(path)
        if self.exists(a):
            raise _error(errno.EEXIST, path)
        self.touched = True
        self._make_parent(a, path)
        _mkdir(self.scratch_of(a), mode)

    def unlink(self, path: str) -> None:
        a = self.user_path(path)
        s = self.scratch_of(a)
        in_scratch, real = _lexists(s), self._real_visible(a)
        if not (in_scratch or real):
            raise self._missing(a, path)
        if (in_scratch and _isdir(s) and not _islink(s)) or (
            not in_scratch and _isdir(a) and not _islink(a)
        ):
            raise _error(errno.EISDIR, path)
        self.touched = True
        if in_scratch:
            _unlink(s)
        if real:
            self._gone.add(a)

    def rmdir(self, path: str) -> None:
        a = self.user_path(path)
        if not self.exists(a):
            raise self._missing(a, path)
        if not self.isdir(a):
            raise _error(errno.ENOTDIR, path)
        if self.listdir(a):
            raise _error(errno.ENOTEMPTY, path)
        self._remove_tree(a)

    def rmtree(self, path: str) -> None:
        a = self.user_path(path)
        if not self.exists(a):
            raise self._missing(a, path)
        if not self.isdir(a):
            raise _error(errno.ENOTDIR, path)
        self._remove_tree(a)

    def _remove_tree(self, a: str) -> None:
        self.touched = True
        s = self.scratch_of(a)
        if _lexists(s):
            _remove_all(s)
        if self._real_visible(a):
            self._gone.add(a)

    def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst` in the replay's view (either may lie under a real root)."""
        a, b = self.user_path(src), self.user_path(dst)
        if self.is_real(a) and self.is_real(b):
            _rename(a, b)
            return
        for x, name in ((a, src), (b, dst)):  # both folders are looked up first, in order
            if not (self.is_real(x) or self.isdir(os.path.dirname(x))):
                raise self._missing(x, name)
        if not (self.is_real(a) or self.exists(a)):
            raise self._missing(a, src)
        is_dir = self.isdir(a)
        self._check_rename(a, b, is_dir, src, dst)
        self.touched = True
        from_path = a if self.is_real(a) else self._brought_up(a)
        to_path = self.write_path(dst, keep=False)
        try:
            _rename(from_path, to_path)
        except OSError as e:
            if e.errno != errno.EXDEV or _isdir(from_path):
                raise
            # a real temp file on another file system than the scratch area: copy it over
            with _open(from_path, "rb") as f_in, _open(to_path, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out, 1 << 20)
            _unlink(from_path)
        if not self.is_real(a) and self._real_visible(a):
            self._gone.add(a)
        if not self.is_real(b) and _lexists(b):
            self._gone.add(b)  # the moved content replaces whatever was there

    def _check_rename(self, a: str, b: str, is_dir: bool, src: str, dst: str) -> None:
        """Raise what rename(2) would for these paths in the replay's view."""
        if a == b:
            return
        if is_dir and b.startswith(a + os.sep):
            raise _error(errno.EINVAL, src)  # a folder into itself
        if a.startswith(b + os.sep):
            raise _error(errno.ENOTEMPTY, dst)  # onto a folder above it, as Linux answers
        if not self.exists(b):
            return
        if is_dir and not self.isdir(b):
            raise _error(errno.ENOTDIR, dst)
        if not is_dir and self.isdir(b):
            raise _error(errno.EISDIR, dst)
        if is_dir and self.listdir(b):
            raise _error(errno.ENOTEMPTY, dst)

    def _brought_up(self, a: str) -> str:
        s = self.scratch_of(a)
        if self._real_visible(a) and (not _lexists(s) or _isdir(s)):
            self._materialize(os.path.dirname(a))
            self._copy_up(a, s)
        return s

    # --- listings -----------------------------------------------------------------------------

    def listdir(self, path: str) -> list[str]:
        """The names in folder `path` in the replay's view (real ones, then the replay's)."""
        return [name for name, _ in self._entries(path)]

    def scandir(self, path: str) -> list[Any]:
        """Entries of folder `path` in the replay's view: `os.DirEntry` objects for real
        entries, `ScratchEntry` objects (the same interface) for the replay's."""
        out: list[Any] = []
        real = {e.name: e for e in _scandir(path)} if self._real_listing(path) else {}
        for name, where in self._entries(path):
            if where == "real":
                out.append(real[name])
            else:
                s = self.scratch_of(os.path.join(self.user_path(path), name))
                out.append(ScratchEntry(name, os.path.join(path, name), s))
        return out

    def _real_listing(self, path: str) -> bool:
        a = self.user_path(path)
        return not self.hidden(a) and _isdir(a)

    def _entries(self, path: str) -> list[tuple[str, str]]:
        a = self.user_path(path)
        s = self.scratch_of(a)
        in_scratch = _isdir(s)
        if _lexists(s) and not in_scratch:
            raise _error(errno.ENOTDIR, path)
        real = self._real_listing(path) and not (_lexists(s) and not in_scratch)
        if not (in_scratch or real):
            raise _error(errno.ENOTDIR, path) if self.exists(a) else self._missing(a, path)
        mine = _listdir(s) if in_scratch else []
        shadowed = set(mine)
        out = []
        if real:
            self.note_read(a)
            for name in _listdir(a):
                if name not in shadowed and os.path.join(a, name) not in self._gone:
                    out.append((name, "real"))
        out += [(name, "scratch") for name in mine]
        return out


class ScratchEntry:
    """An `os.DirEntry` look-alike for an entry the replay wrote: `name` and `path` as the
    caller named the folder, everything else read from the scratch copy."""

    def __init__(self, name: str, path: str, scratch: str) -> None:
        self.name = name
        self.path = path
        self._scratch = scratch

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<ScratchEntry {self.name!r}>"

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return (_stat if follow_symlinks else _lstat)(self._scratch)

    def inode(self) -> int:
        return _lstat(self._scratch).st_ino

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return self._is(stat.S_ISDIR, follow_symlinks)

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return self._is(stat.S_ISREG, follow_symlinks)

    def is_symlink(self) -> bool:
        return self._is(stat.S_ISLNK, False)

    def _is(self, test: Any, follow: bool) -> bool:
        try:
            return bool(test(self.stat(follow_symlinks=follow).st_mode))
        except OSError:
            return False
