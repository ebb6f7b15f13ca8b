"""Replay never touches the user's files: file writes of replayed code go to a scratch area.

`Sandbox(scratch, real=[store])` used as a context manager routes the Python-level file calls
of everything that runs inside it through an `Overlay` (florql/replay/overlay.py): writes land
in the scratch area, reads see the replay's own writes, deletes and renames change only the
replay's view. Covered: `open`/`io.open` (so `pathlib`, `pickle`, `csv`, `json`, `np.save`,
`np.savez`, `np.load`, PIL ...), `os.open`, `os.stat`/`lstat`/`access` (so `os.path.exists`,
`isfile`, `isdir`, `getsize`), `os.listdir`/`scandir` (so `os.walk`, `glob`), `os.mkdir`
(so `os.makedirs`), `remove`/`unlink`/`rmdir`/`rename`/`replace`/`link`/`symlink`, `chmod`,
`utime`, `truncate`, the xattr calls, `shutil.rmtree` (and through the above `shutil.copy*`,
`move`, `copytree`), and `torch.save`/`load` and `torch.jit.save`/`load` given a path
(torch opens those in C++; patched when torch is imported, also after entering).

Decisions:
- Writes under the system temp folder are redirected too (another run's files may live
  there), except files and folders made by `tempfile` (`mkstemp`, `mkdtemp`,
  `NamedTemporaryFile`, `TemporaryDirectory`): their names are new and unique, so making them
  for real cannot overwrite anything, and native code (a DataLoader's sockets) can use them.
- Paths named in `real` (the store), the scratch area and `/dev`, `/proc`, `/sys` are used in
  place.
- Python writes no bytecode caches while inside (they would land beside the user's modules).
- Not covered (the caller's fingerprint check reports what they change): writes by native code
  that opens files itself, by subprocesses, and calls given a `dir_fd`.

Leaving the context restores every patched function and removes the scratch area.

>>> import tempfile
>>> from pathlib import Path
>>> out = Path(tempfile.mkdtemp()) / "out.txt"
>>> with Sandbox(tempfile.mkdtemp()):
...     _ = out.write_text("replayed")
...     out.read_text()
'replayed'
>>> out.exists()
False
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import io
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from florql.replay.overlay import Overlay

SYSTEM_REAL = ("/dev", "/proc", "/sys")

# Functions that hand a path to native code, which opens it itself: by defining module, the
# package that re-exports them, and per function (name, position and keyword of the path
# argument, whether it writes).
NATIVE_PATH_CALLS: dict[str, tuple[str, list[tuple[str, int, str, bool]]]] = {
    "torch.serialization": ("torch", [("save", 1, "f", True), ("load", 0, "f", False)]),
    "torch.jit._serialization": ("torch.jit", [("save", 1, "f", True), ("load", 0, "f", False)]),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class Sandbox:
    """Routes file calls through an Overlay on `scratch` while entered (not re-entrant).

    Args:
        scratch: a folder for the replay's files; created if missing, removed on exit.
        real: paths used in place (the store the replay writes its values to).
    """

    def __init__(self, scratch: str, real: Iterable[str] = ()) -> None:
        self.scratch = os.path.abspath(scratch)
        self.real = [*real, *SYSTEM_REAL]
        self.overlay: Overlay | None = None
        self._saved: list[tuple[Any, str, Any]] = []
        self._finder: _AfterImport | None = None
        self._reexported: list[tuple[str, str, Any, Any]] = []  # (package, name, orig, wrapper)
        self._bypass = threading.local()
        self._bytecode = sys.dont_write_bytecode
        # A module imported inside may keep a wrapper after exit (`from builtins import open`):
        # outside, every wrapper calls through to the original.
        self._active = False

    def __enter__(self) -> Sandbox:
        self.overlay = Overlay(self.scratch, self.real)
        self._active = True
        self._bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        for target, name, wrapper in self._wrappers():
            self._patch(target, name, wrapper)
        later = set()
        for name in NATIVE_PATH_CALLS:
            if name in sys.modules:
                self._patch_native(sys.modules[name])
            else:
                later.add(name)
        if later:
            self._finder = _AfterImport(later, self._patch_native)
            sys.meta_path.insert(0, self._finder)
        return self

    def __exit__(self, *exc: object) -> None:
        self._active = False
        for target, name, original in reversed(self._saved):
            setattr(target, name, original)
        self._saved = []
        if self._finder is not None and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        for package, name, original, wrapper in self._reexported:
            # a package imported inside the sandbox bound the wrapper itself, without _patch
            if getattr(sys.modules.get(package), name, None) is wrapper:
                setattr(sys.modules[package], name, original)
        self._reexported = []
        sys.dont_write_bytecode = self._bytecode
        shutil.rmtree(self.scratch, ignore_errors=True)

    def leftover_warnings(self, run_id: str, since: float, folders: Iterable[str]) -> list[str]:
        """For a replay that diverged: a warning naming what `leftovers_read` found, if any."""
        found = self.leftovers_read(since, folders)
        files = [p for p in found if not os.path.isdir(p)]  # folders only when no file is
        found = files or found
        if not found:
            return []
        named = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        return [
            f"the replay of run {run_id} read files that run itself wrote or changed: {named}; "
            "a replay sees the versions the run left at its end, not those it saw at that "
            "point, a likely cause of the divergence (delete stale outputs at the start of the "
            "script, or write them to a folder per run)"
        ]

    def leftovers_read(self, since: float, folders: Iterable[str]) -> list[str]:
        """Real files and folders under `folders` the replay read (or listed) that changed at
        or after time `since` (seconds since the epoch): when `since` is the start of the
        recorded run, what the replay read there is what the run left behind at its end, not
        what the run itself saw at that point. Sorted."""
        if self.overlay is None:
            return []
        roots = [os.path.abspath(f) for f in folders]
        since_ns = int(since * 1e9)
        out = []
        for p in self.overlay.real_reads:
            if not any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
                continue
            try:
                if os.lstat(p).st_mtime_ns >= since_ns:
                    out.append(p)
            except OSError:
                continue
        return sorted(out)

    def _patch(self, target: Any, name: str, wrapper: Callable) -> None:
        if hasattr(target, name):
            self._saved.append((target, name, getattr(target, name)))
            setattr(target, name, wrapper)

    # --- routing -------------------------------------------------------------------------------

    def _path(self, p: Any) -> str | None:
        """`p` as a str path when the overlay should route it, else None (fds, file objects,
        a call made by `tempfile` for a fresh name)."""
        if isinstance(p, int) or not self._active or getattr(self._bypass, "on", False):
            return None
        try:
            p = os.fspath(p)
        except TypeError:
            return None
        return os.fsdecode(p) if isinstance(p, bytes) else p

    def read(self, p: Any) -> Any:
        """The path to read in place of `p` (`p` itself when not routed)."""
        s = self._path(p)
        assert self.overlay is not None
        mapped = s if s is None else self.overlay.read_path(s)
        return p if mapped == s else mapped  # unchanged: the caller's own object (bytes stay bytes)

    def write(self, p: Any, keep: bool) -> Any:
        """The path to write in place of `p` (`p` itself when not routed)."""
        s = self._path(p)
        assert self.overlay is not None
        mapped = s if s is None else self.overlay.write_path(s, keep)
        return p if mapped == s else mapped

    # --- the wrapped functions -----------------------------------------------------------------

    def _wrappers(self) -> list[tuple[Any, str, Callable]]:
        out: list[tuple[Any, str, Callable | None]] = []  # None: not on this platform
        opened = self._open(io.open)
        out += [(builtins, "open", opened), (io, "open", opened)]
        out.append((os, "open", self._os_open(os.open)))
        for name in ("stat", "lstat", "access", "readlink", "getxattr", "listxattr"):
            out.append((os, name, self._reading(getattr(os, name, None))))
        for name in ("chmod", "chown", "utime", "truncate", "setxattr", "removexattr"):
            out.append((os, name, self._changing(getattr(os, name, None))))
        ov = self._overlay_call
        out += [
            (os, "mkdir", ov(os.mkdir, lambda o, p, mode=0o777: o.mkdir(p, mode))),
            (os, "remove", ov(os.remove, lambda o, p: o.unlink(p))),
            (os, "unlink", ov(os.unlink, lambda o, p: o.unlink(p))),
            (os, "rmdir", ov(os.rmdir, lambda o, p: o.rmdir(p))),
            (os, "listdir", self._listing(os.listdir)),
            (os, "chdir", self._chdir(os.chdir)),
            (os, "scandir", self._scanning(os.scandir)),
            (os, "rename", self._moving(os.rename)),
            (os, "replace", self._moving(os.replace)),
            (os, "link", self._linking(os.link, read_source=True)),
            (os, "symlink", self._linking(os.symlink, read_source=False)),
            (shutil, "rmtree", self._rmtree(shutil.rmtree)),
            (tempfile, "mkdtemp", self._fresh(tempfile.mkdtemp, _mkdtemp_dir, lambda r: r)),
            (
                tempfile,
                "_mkstemp_inner",  # behind mkstemp and NamedTemporaryFile
                self._fresh(tempfile._mkstemp_inner, _mkstemp_dir, lambda r: r[1]),  # type: ignore[attr-defined]
            ),
        ]
        return [(t, n, w) for t, n, w in out if w is not None]

    def _open(self, original: Callable) -> Callable:
        def open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:  # noqa: A001
            if any(c in mode for c in "wax+"):
                file = self.write(file, keep="w" not in mode)
            else:
                file = self.read(file)
            return original(file, mode, *args, **kwargs)

        return open

    def _os_open(self, original: Callable) -> Callable:
        def os_open(path: Any, flags: int, *args: Any, dir_fd: Any = None, **kw: Any) -> Any:
            if dir_fd is None:
                if flags & _WRITE_FLAGS:
                    path = self.write(path, keep=not flags & os.O_TRUNC)
                else:
                    path = self.read(path)
            return original(path, flags, *args, dir_fd=dir_fd, **kw)

        return os_open

    def _reading(self, original: Callable | None) -> Callable | None:
        if original is None:
            return None

        def reading(path: Any, *args: Any, **kw: Any) -> Any:
            if kw.get("dir_fd") is None:
                path = self.read(path)
            return original(path, *args, **kw)

        return reading

    def _changing(self, original: Callable | None) -> Callable | None:
        if original is None:
            return None

        def changing(path: Any, *args: Any, **kw: Any) -> Any:
            if kw.get("dir_fd") is None:
                path = self.write(path, keep=True)
            return original(path, *args, **kw)

        return changing

    def _overlay_call(self, original: Callable, call: Callable) -> Callable:
        """A wrapper that hands routed paths to `call(overlay, path, ...)`."""

        def wrapper(path: Any, *args: Any, **kw: Any) -> Any:
            p = self._path(path)
            if p is None or kw.get("dir_fd") is not None or self._is_real(p):
                return original(path, *args, **kw)
            kw.pop("dir_fd", None)
            return call(self.overlay, p, *args, **kw)

        return wrapper

    def _is_real(self, p: str) -> bool:
        assert self.overlay is not None
        return self.overlay.is_real(p)

    def _listing(self, original: Callable) -> Callable:
        def listdir(path: Any = ".") -> list:
            p = self._path(path)
            assert self.overlay is not None
            if p is None or self._is_real(p):
                return original(path)
            if not self.overlay.touched:
                self.overlay.note_read(self.overlay.user_path(p))
                return original(path)
            names = self.overlay.listdir(p)
            return [os.fsencode(n) for n in names] if isinstance(path, bytes) else names

        return listdir

    def _chdir(self, original: Callable) -> Callable:
        def chdir(path: Any) -> None:
            p = self._path(path)
            assert self.overlay is not None
            original(path if p is None else self.overlay.folder_path(p))

        return chdir

    def _scanning(self, original: Callable) -> Callable:
        def scandir(path: Any = ".") -> Any:
            p = self._path(path)
            assert self.overlay is not None
            if p is None or self._is_real(p) or isinstance(path, bytes):
                return original(path)
            if not self.overlay.touched:
                self.overlay.note_read(self.overlay.user_path(p))
                return original(path)
            return _Listing(self.overlay.scandir(p))

        return scandir

    def _moving(self, original: Callable) -> Callable:
        def move(src: Any, dst: Any, **kw: Any) -> None:
            a, b = self._path(src), self._path(dst)
            if a is None or b is None or any(v is not None for v in kw.values()):
                return original(src, dst, **kw)
            assert self.overlay is not None
            self.overlay.rename(a, b)
            return None

        return move

    def _linking(self, original: Callable, read_source: bool) -> Callable:
        def link(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
            if kw.get("dir_fd") is None and kw.get("src_dir_fd") is None:
                if read_source:  # a hard link shares the source's bytes: link a copy
                    src = self.write(src, keep=True)
                elif os.path.isabs(self._path(src) or ""):
                    src = self._symlink_target(src)
                dst = self.write(dst, keep=False)
            return original(src, dst, *args, **kw)

        return link

    def _symlink_target(self, src: Any) -> Any:
        """An absolute link target as its scratch copy, so a write through the link stays in
        the scratch area."""
        try:
            return self.write(src, keep=True)
        except OSError:
            return src  # dangling target: nothing to write through

    def _rmtree(self, original: Callable) -> Callable:
        def rmtree(path: Any, ignore_errors: bool = False, onerror: Any = None, **kw: Any) -> None:
            p = self._path(path)
            if p is None or kw.get("dir_fd") is not None or self._is_real(p):
                return original(path, ignore_errors, onerror, **kw)
            assert self.overlay is not None
            try:
                self.overlay.rmtree(p)
            except OSError:
                if ignore_errors:
                    return None
                if onerror is None:
                    raise
                onerror(os.rmdir, path, sys.exc_info())
            return None

        return rmtree

    def _fresh(
        self, original: Callable, folder: Callable[..., Any], made: Callable[[Any], str]
    ) -> Callable:
        """`tempfile` makes a new unique name in the system temp folder for real, outside the
        overlay, and that name is used in place from then on. One asked for in another folder
        (`dir=`, perhaps the user's) goes through the overlay like any other write."""

        def fresh(*args: Any, **kw: Any) -> Any:
            where = folder(*args, **kw)
            if where is not None and os.path.abspath(where) != tempfile.gettempdir():
                return original(*args, **kw)
            self._bypass.on = True
            try:
                result = original(*args, **kw)
            finally:
                self._bypass.on = False
            assert self.overlay is not None
            self.overlay.add_real(made(result))
            return result

        return fresh

    # --- native code given a path -------------------------------------------------------------

    def _patch_native(self, module: ModuleType) -> None:
        package, calls = NATIVE_PATH_CALLS[module.__name__]
        for name, index, keyword, writes in calls:
            original = getattr(module, name, None)
            if original is None:
                continue
            wrapper = self._path_argument(original, index, keyword, writes)
            self._reexported.append((package, name, original, wrapper))
            for target in (module, sys.modules.get(package)):
                if target is not None:
                    self._patch(target, name, wrapper)

    def _path_argument(self, original: Callable, index: int, keyword: str, writes: bool) -> Any:
        def route(p: Any) -> Any:
            return self.write(p, keep=False) if writes else self.read(p)

        def call(*args: Any, **kw: Any) -> Any:
            if keyword in kw:
                kw[keyword] = route(kw[keyword])
            elif len(args) > index:
                args = (*args[:index], route(args[index]), *args[index + 1 :])
            return original(*args, **kw)

        return call


def _mkdtemp_dir(suffix: Any = None, prefix: Any = None, dir: Any = None) -> Any:  # noqa: A002
    return dir


def _mkstemp_dir(dir: Any, *args: Any, **kw: Any) -> Any:  # noqa: A002
    return dir


class _Listing:
    """What `os.scandir` returns: an iterator of entries that is also a context manager."""

    def __init__(self, entries: list[Any]) -> None:
        self._it = iter(entries)

    def __iter__(self) -> _Listing:
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._active = False
        self.close()

    def close(self) -> None:
        self._it = iter(())


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` right after one of the modules `names` is first executed (torch
    imported inside the sandbox: `torch/__init__` binds `torch.save` after
    `torch.serialization` ran, so it binds the patched function)."""

    def __init__(self, names: set[str], then: Callable[[ModuleType], None]) -> None:
        self.names = names
        self.then = then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    def __init__(self, inner: Any, then: Callable[[ModuleType], None]) -> None:
        self.inner = inner
        self.then = then

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        self.then(module)
