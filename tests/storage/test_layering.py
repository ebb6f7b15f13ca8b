"""Layers are strict: storage imports no florql, torch or duckdb, and is never shadowed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import florql_storage

STORAGE = Path(florql_storage.__file__).parent
FORBIDDEN = {"florql", "torch", "duckdb", "pickle", "cloudpickle", "dill"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_storage_imports_no_upper_layer_torch_duckdb_or_pickle():
    files = sorted(STORAGE.glob("*.py"))
    assert len(files) > 8
    bad = {f.name: _imports(f) & FORBIDDEN for f in files if _imports(f) & FORBIDDEN}
    assert bad == {}


def test_a_users_storage_py_does_not_shadow_the_engine(tmp_path):
    (tmp_path / "storage.py").write_text("raise RuntimeError('user storage.py was imported')\n")
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        f"assert sys.path[0] == {str(tmp_path)!r}\n"
        "from florql_storage import Store\n"
        "import florql_storage\n"
        "print(florql_storage.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).parent == STORAGE


def test_importing_the_engine_does_not_import_torch_or_duckdb():
    code = "import sys, florql_storage, florql_storage.fs; print(sorted(m for m in ('torch','duckdb','florql') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
