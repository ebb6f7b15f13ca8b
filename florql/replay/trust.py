"""What replay takes from a store, checked before it is used: a store is input, not code we wrote.

Replay runs the code a store recorded (the script and its local modules, `RUN_BEGIN.sources`),
writes it under a private folder named by the run id, and reads the current version of each
recorded path beside the script. A store made by someone else could name a run `../../x` or
`/etc`, or list a source `../../.bashrc`, and so make replay write or read anywhere. So:

- a run id must match `RUN_ID` (what `florql.session.new_run_id` makes, and the short ids tests
  and older stores use): letters, digits, `-` and `_`, at most 64, not starting with `-`;
- a source path must be relative, already normalised (`a/b.py`, not `a/../b.py` or `./b.py`),
  inside the script's folder (no `..` part), without NUL or backslash;
- the recorded script's own name (`script_rel`) obeys the same rule.
A run that breaks one is not replayed, with a warning naming the problem.

Replaying a store that another user's files make up runs that user's code as you: the first
replay of such a store says so on stderr (once per store and user; `announce_foreign_store`).

>>> check_run_id("r2611250721221234abcd"), check_source_path("pkg/model.py")
('r2611250721221234abcd', 'pkg/model.py')
>>> problem_with_source_path("../outside.py")
"source path '../outside.py' leaves the script's folder"
>>> problem_with_run_id("/etc")
"run id '/etc' is not a florql run id (letters, digits, '-' and '_', at most 64)"
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from collections.abc import Mapping
from typing import Any

from florql.errors import ReplayError

RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\Z")


def problem_with_run_id(run_id: Any) -> str | None:
    """Why `run_id` cannot name a folder under replay's private one, or None."""
    if isinstance(run_id, str) and RUN_ID.match(run_id):
        return None
    return f"run id {run_id!r} is not a florql run id (letters, digits, '-' and '_', at most 64)"


def problem_with_source_path(rel: Any) -> str | None:
    """Why `rel` cannot be a recorded source path (relative, normalised, inside), or None."""
    if not isinstance(rel, str) or not rel:
        return f"source path {rel!r} is not a file name"
    if "\0" in rel or "\\" in rel:
        return f"source path {rel!r} holds a NUL or a backslash"
    if posixpath.isabs(rel) or os.path.isabs(rel):
        return f"source path {rel!r} is absolute"
    parts = rel.split("/")
    if ".." in parts:
        return f"source path {rel!r} leaves the script's folder"
    if posixpath.normpath(rel) != rel or "." in parts:
        return f"source path {rel!r} is not normalised"
    return None


def check_run_id(run_id: Any) -> str:
    """`run_id`, or ReplayError saying why it is refused."""
    problem = problem_with_run_id(run_id)
    if problem:
        raise ReplayError(f"{problem}; the store may be damaged or crafted: not replayed")
    return str(run_id)


def check_source_path(rel: Any) -> str:
    """`rel`, or ReplayError saying why it is refused."""
    problem = problem_with_source_path(rel)
    if problem:
        raise ReplayError(f"{problem}; the store may be damaged or crafted: not replayed")
    return str(rel)


def problem_with_run(run_id: Any, meta: Mapping[str, Any], script_rel: str) -> str | None:
    """The first reason a run's id, script name or source list cannot be replayed, or None."""
    problem = problem_with_run_id(run_id)
    if problem:
        return problem
    sources = meta.get("sources") or {}
    if not isinstance(sources, Mapping):
        return "its recorded sources are not a list of files"
    for rel in [script_rel, *sources]:
        problem = problem_with_source_path(rel)
        if problem:
            return problem
    if not all(isinstance(text, str) for text in sources.values()):
        return "a recorded source is not text"
    return None


# --- stores made by someone else --------------------------------------------------------------


def foreign_owners(store_path: str) -> set[int]:
    """The owners (uids) other than this user's of the store folder and the files in it."""
    me = os.getuid()
    owners: set[int] = set()
    for folder, dirs, files in os.walk(store_path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            try:
                uid = os.lstat(name).st_uid
            except OSError:
                continue
            if uid != me:
                owners.add(uid)
    return owners


def announce_foreign_store(store_path: str, seen_file: str) -> bool:
    """Say on stderr, the first time this user replays a store others' files make up, that
    replay runs the code recorded in it. `seen_file` lists the stores already announced.
    Returns whether it printed."""
    real = os.path.realpath(store_path)
    owners = foreign_owners(real)
    if not owners or real in _seen(seen_file):
        return False
    names = ", ".join(sorted(_user_name(uid) for uid in owners))
    print(
        f"florql: note: store {real} holds files of another user ({names}); replay runs the "
        "code recorded in it (its script and local modules) as you, in its recorded working "
        "folder. Replay only stores you trust; `florql explain` shows the code that would run",
        file=sys.stderr,
    )
    _remember(seen_file, real)
    return True


def _seen(seen_file: str) -> set[str]:
    try:
        with open(seen_file, encoding="utf-8") as f:
            return {line.rstrip("\n") for line in f}
    except OSError:
        return set()


def _remember(seen_file: str, store: str) -> None:
    try:
        os.makedirs(os.path.dirname(seen_file), mode=0o700, exist_ok=True)
        with open(seen_file, "a", encoding="utf-8") as f:
            f.write(store + "\n")
    except OSError:
        pass  # the note shows again next time: harmless


def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
