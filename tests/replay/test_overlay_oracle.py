"""Oracle test of the replay sandbox: any sequence of file operations seen through the sandbox
behaves as the same sequence on a real copy of the folder (same results, same errors, same
tree after every step), and the user's folder itself never changes (overlay invariants 1-3).

The copy lies under a real root of the same Sandbox, so both sides run the very same calls.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from florql.replay.sandbox import Sandbox

PATHS = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "e", "e/a"]
INITIAL = {"a": b"real a", "d/a": b"real d/a", "d/e/a": b"real d/e/a"}


def _op(kind: str, p: str, q: str, data: bytes) -> None:
    if kind == "write":
        with open(p, "wb") as f:
            f.write(data)
    elif kind == "append":
        with open(p, "ab") as f:
            f.write(data)
    elif kind == "read":
        with open(p, "rb") as f:
            f.read()
    elif kind == "remove":
        os.remove(p)
    elif kind == "mkdir":
        os.mkdir(p)
    elif kind == "makedirs":
        os.makedirs(p, exist_ok=True)
    elif kind == "rmdir":
        os.rmdir(p)
    elif kind == "rmtree":
        shutil.rmtree(p)
    elif kind == "rename":
        os.rename(p, q)
    elif kind == "replace":
        os.replace(p, q)
    elif kind == "copy":
        shutil.copy(p, q)
    elif kind == "move":
        shutil.move(p, q)
    elif kind == "copytree" and not q.startswith(p + os.sep):  # into itself: endless on any FS
        shutil.copytree(p, q)
    elif kind == "chdir":  # relative paths inside a folder made current
        saved = os.getcwd()
        os.chdir(p)
        try:
            Path("f").write_bytes(data)
            assert Path("f").read_bytes() == data and "f" in os.listdir(".")
        finally:
            os.chdir(saved)
    elif kind == "pathlib":
        Path(p).write_bytes(data)
        Path(q).touch()


def _tree(base: str) -> dict[str, bytes | None]:
    """Every entry under `base` as the calling code sees it: content, or None for a folder."""
    out: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(base):
        rel = os.path.relpath(folder, base)
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.normpath(os.path.join(rel, name))] = f.read()
    for p in PATHS:  # existence checks agree with the listing
        assert os.path.exists(os.path.join(base, p)) == (p in out)
    return out


def _make(base: str) -> None:
    for rel, data in INITIAL.items():
        os.makedirs(os.path.dirname(os.path.join(base, rel)), exist_ok=True)
        with open(os.path.join(base, rel), "wb") as f:
            f.write(data)


def _outcome(base: str, kind: str, p: str, q: str, data: bytes) -> str:
    try:
        _op(kind, os.path.join(base, p), os.path.join(base, q), data)
    except OSError as e:
        return type(e).__name__
    except shutil.Error:
        return "shutil.Error"
    return "ok"


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "write",
                "append",
                "read",
                "remove",
                "mkdir",
                "makedirs",
                "rmdir",
                "rmtree",
                "rename",
                "replace",
                "copy",
                "move",
                "copytree",
                "chdir",
                "pathlib",
            ]
        ),
        st.sampled_from(PATHS),
        st.sampled_from(PATHS),
        st.binary(min_size=0, max_size=8),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_any_sequence_of_operations_matches_a_real_copy_and_leaves_the_folder_alone(ops) -> None:
    root = tempfile.mkdtemp()
    try:
        user, copy = os.path.join(root, "user"), os.path.join(root, "copy")
        _make(user)
        _make(copy)
        before = _tree(user)
        with Sandbox(os.path.join(root, "scratch"), real=[copy]):
            for kind, p, q, data in ops:
                got = _outcome(user, kind, p, q, data)
                want = _outcome(copy, kind, p, q, data)
                assert got == want, (kind, p, q)
                assert _tree(user) == _tree(copy), (kind, p, q)
        assert _tree(user) == before
    finally:
        shutil.rmtree(root)
