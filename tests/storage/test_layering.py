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


# --- florql's own layers ------------------------------------------------------------------------
# storage <- shared (errors, values, settings) <- record <- replay <- query <- CLI: a module
# imports only modules of its own layer or below, directly (no module named by a string and
# looked up at run time to hide an upward edge), and the import graph has no cycle. Imports
# inside functions count: a lazy import is still a dependency.

FLORQL = Path(florql_storage.__file__).parent.parent / "florql"
LAYERS = ("storage", "shared", "record", "replay", "query", "cli")
# The longest matching prefix names a module's layer; a new module must be placed here.
PLACES = {
    "florql_storage": "storage",
    "florql.errors": "shared",
    "florql.values": "shared",
    "florql.config": "shared",
    "florql.schema": "shared",
    "florql.api": "record",
    "florql.session": "record",
    "florql.capture": "record",
    "florql.checkpointer": "record",
    "florql.flusher": "record",
    "florql.loopstate": "record",
    "florql.scriptvars": "record",
    "florql.sources": "record",
    "florql.declared_args": "record",
    "florql.parsed_args": "record",
    "florql.resume": "record",
    "florql.runner": "record",
    "florql.replay": "replay",
    "florql.replay_session": "replay",
    "florql.sql": "query",
    "florql": "cli",  # the package itself: the facade over recording and querying
    "florql.__main__": "cli",
    "florql.cli": "cli",
    "florql.record_command": "cli",
    "florql.check_command": "cli",
    "florql.replay.commands": "cli",
    "florql.sql.commands": "cli",
    "florql.ui": "cli",
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in FLORQL.rglob("*.py"):
        parts = ["florql", *f.relative_to(FLORQL).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _layer(module: str) -> str | None:
    if module.startswith("florql_storage"):
        return "storage"
    prefixes = [p for p in PLACES if module == p or module.startswith(p + ".")]
    return PLACES[max(prefixes, key=len)] if prefixes else None


def _targets(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules `module` imports (anywhere in it), and florql modules it names in a string."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package
                for _ in range(node.level - 1):
                    up = up.rpartition(".")[0]
                base = f"{up}.{base}" if base else up
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
        elif isinstance(node, ast.Call) and _named(node.func) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant):
                out.add(str(node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name, colon, _ = node.value.partition(":")  # an entry point: "florql.cli:main"
            if colon and name.startswith("florql.") and name in known:
                out.add(name)
    return {t for t in out if t in known or t.startswith("florql_storage")} - {module}


def _named(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _targets(m, p, known) for m, p in modules.items()}


def test_every_florql_module_has_a_layer():
    unplaced = sorted(m for m in _modules() if _layer(m) is None)
    assert not unplaced, f"place {unplaced} in a layer: PLACES in tests/storage/test_layering.py"


def test_florql_imports_point_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = {}
    for module, targets in _graph().items():
        here = _layer(module)
        if here is None:
            continue
        up = sorted(t for t in targets if rank.get(_layer(t) or "", -1) > rank[here])
        if up:
            upward[f"{module} ({here})"] = [f"{t} ({_layer(t)})" for t in up]
    assert not upward, f"imports pointing up the layers {LAYERS}: {upward}"


def test_florql_has_no_import_cycles():
    graph = _graph()
    # A package's own __init__ runs before its modules anyway: importing it is no edge back.
    edges = {
        m: {t for t in ts if t in graph and not m.startswith(t + ".")} for m, ts in graph.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_the_layering_test_sees_an_upward_import_and_a_cycle(monkeypatch):
    """The checks above can fail: a record module importing the SQL layer is caught."""
    graph = _graph()
    graph["florql.session"] = {*graph["florql.session"], "florql.sql.connection"}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: graph)
    try:
        test_florql_imports_point_down_the_layers()
    except AssertionError as e:
        assert "florql.sql.connection (query)" in str(e)
    else:
        raise AssertionError("an upward import went unnoticed")
    graph["florql.sql.connection"] = {*graph["florql.sql.connection"], "florql.session"}
    try:
        test_florql_has_no_import_cycles()
    except AssertionError as e:
        assert "florql.session" in str(e)
    else:
        raise AssertionError("a cycle went unnoticed")
