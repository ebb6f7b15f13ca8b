"""The second wall behind the sandbox: did the replay change the user's folders anyway?

Native code that opens files itself, and subprocesses, write past the Python-level sandbox
(florql/replay/sandbox.py). A `Watch` takes a cheap fingerprint (size, mtime_ns, inode) of
every file under the watched folders before the replay and again after it, and turns the
difference into a warning naming the changed files. It is bounded: at most `limit` files are
looked at, in a fixed order (folders breadth-first, names sorted), so a huge data folder costs
a bounded number of `lstat` calls; past the bound, only files both fingerprints hold are
compared.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "model.pt").write_bytes(b"recorded")
>>> watch = Watch([str(folder)])
>>> _ = (folder / "model.pt").write_bytes(b"overwritten")
>>> [Path(p).name for p in watch.changed()]
['model.pt']
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

LIMIT = 10_000  # files per fingerprint: ~10-20 ms of lstat calls on a warm cache
SHOWN = 3  # changed files named in the warning

Fingerprint = dict[str, tuple[int, int, int]]


def take(roots: Iterable[str], exclude: Iterable[str] = (), limit: int = LIMIT) -> Fingerprint:
    """(size, mtime_ns, inode) of up to `limit` non-folder entries under `roots`, by absolute
    path; symlinks are not followed; folders in `exclude` (and below) are skipped."""
    skip = {os.path.abspath(p) for p in exclude}
    queue = sorted({os.path.abspath(r) for r in roots})
    out: Fingerprint = {}
    while queue and len(out) < limit:
        folder = queue.pop(0)
        if folder in skip:
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # gone or unreadable: nothing of it to compare
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                queue.append(e.path)
            elif len(out) < limit:
                out[e.path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def differences(before: Fingerprint, after: Fingerprint, limit: int = LIMIT) -> list[str]:
    """Paths changed, added or removed between two fingerprints, sorted. Past the bound a
    path missing from one side may only lie beyond it there, so it counts only when that side
    is complete."""
    out = {p for p in before.keys() & after.keys() if before[p] != after[p]}
    if len(before) < limit:
        out |= after.keys() - before.keys()
    if len(after) < limit:
        out |= before.keys() - after.keys()
    return sorted(out)


class Watch:
    """A fingerprint of `roots` taken now, compared with a new one by `changed()`."""

    def __init__(self, roots: Iterable[str], exclude: Iterable[str] = (), limit: int = LIMIT):
        self.roots = [r for r in dict.fromkeys(os.path.abspath(r) for r in roots)]
        self.exclude = list(exclude)
        self.limit = limit
        self.before = take(self.roots, self.exclude, limit)

    def changed(self) -> list[str]:
        """Files that differ now from when the watch was made."""
        return differences(self.before, take(self.roots, self.exclude, self.limit), self.limit)

    def warnings(self, run_id: str) -> list[str]:
        """[] when nothing changed, else one warning naming the changed files."""
        changed = self.changed()
        if not changed:
            return []
        named = ", ".join(changed[:SHOWN])
        more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
        return [
            f"files in the folders of run {run_id} changed while the replay ran: {named}{more}; "
            "florql redirects the replayed script's Python file writes to a scratch area, but "
            "not writes by native code or subprocesses (or another program): check those files "
            "before relying on them"
        ]
