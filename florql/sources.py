"""The code a run executed: the script, its local modules, and the git commit.

`collect(script)` returns {path relative to the script's folder: source text} for the script and
every local module it imports, found statically (import statements, followed recursively), so
the set is known before the script runs. A module is local when its file lies under the script's
folder (and not inside a virtual environment or site-packages there).

>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "train.py").write_text("import helpers\\nimport os\\n")
>>> _ = (d / "helpers.py").write_text("from . import nothing\\nX = 1\\n")
>>> sorted(collect(str(d / "train.py")))
['helpers.py', 'train.py']
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from typing import Any

_SKIP_PARTS = {"site-packages", "dist-packages", ".venv", "venv", "env", "__pycache__"}


def collect(script: str) -> dict[str, str]:
    """Sources of `script` and its local modules, by path relative to the script's folder."""
    root = os.path.dirname(os.path.abspath(script))
    out: dict[str, str] = {}
    todo = [os.path.abspath(script)]
    while todo:
        path = todo.pop()
        rel = os.path.relpath(path, root)
        if rel in out:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        out[rel] = text
        todo.extend(
            p for p in _local_imports(text, path, root) if os.path.relpath(p, root) not in out
        )
    return out


def _local_imports(text: str, path: str, root: str) -> list[str]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    found = []
    here = os.path.dirname(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _resolve(alias.name, root)
        elif isinstance(node, ast.ImportFrom):
            base = root
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = os.path.dirname(base)
            mod = node.module or ""
            found += _resolve(mod, base)
            for alias in node.names:  # `from pkg import submodule`
                found += _resolve(f"{mod}.{alias.name}" if mod else alias.name, base)
    return [p for p in found if _is_local(p, root)]


def _resolve(dotted: str, base: str) -> list[str]:
    if not dotted:
        return []
    parts = dotted.split(".")
    out = []
    for i in range(1, len(parts) + 1):
        stem = os.path.join(base, *parts[:i])
        for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
            if os.path.isfile(candidate):
                out.append(candidate)
    return out


def _is_local(path: str, root: str) -> bool:
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):
        return False
    return not (_SKIP_PARTS & set(rel.split(os.sep)))


def source_hash(srcs: dict[str, str]) -> str:
    """A stable hash of a set of sources (sha256 over sorted paths and texts).

    >>> source_hash({"a.py": "x"}) == source_hash({"a.py": "x"}) != source_hash({"a.py": "y"})
    True
    """
    h = hashlib.sha256()
    for rel in sorted(srcs):
        h.update(rel.encode() + b"\0" + srcs[rel].encode() + b"\0")
    return h.hexdigest()[:16]


def git_commit(folder: str) -> str | None:
    """The HEAD commit of the git repository containing `folder`, or None (read-only)."""
    try:
        r = subprocess.run(
            ["git", "-C", folder or ".", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = r.stdout.strip()
    return out if r.returncode == 0 and len(out) >= 40 else None


def torch_version() -> str | None:
    """torch's version without importing it when the script has not."""
    mod: Any = sys.modules.get("torch")
    if mod is not None:
        return str(getattr(mod, "__version__", None))
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return None
