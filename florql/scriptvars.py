"""Script variables that a skipped inner loop must still leave behind.

When replay or resume skips an outer iteration's first inner loop, the registered objects and
RNG come back from the checkpoint, but the script's own variables that the loop changed (a
running sum, a counter) would keep stale values. `analyze` finds them statically: names assigned
inside the first `florql.loop` nested in the outermost `florql.loop` body and read later in that
body or after the outer loop. At record time their values are read from the running frame at the
inner loop's end; on restore they are written back into it.

>>> src = '''
... import florql
... total = 0
... for epoch in florql.loop("epoch", range(3)):
...     seen = 0
...     for i in florql.loop("step", range(4)):
...         seen += 1
...         tmp = i * 2
...     florql.log("seen", seen)
... print(total)
... '''
>>> analyze(src)
('seen',)
"""

from __future__ import annotations

import ast
import ctypes
import sys
from types import FrameType
from typing import Any


def analyze(source: str) -> tuple[str, ...]:
    """Names the first inner florql.loop assigns and later code reads, sorted; () if none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    outer, after = _find_outer(tree)
    if outer is None:
        return ()
    inner, later = _find_inner(outer.body)
    if inner is None:
        return ()
    assigned = _stored_names(inner)
    read: set[str] = set()
    for stmt in later + after:
        read |= _loaded_names(stmt)
    return tuple(sorted(assigned & read))


def _is_loop_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "loop") or (
        isinstance(f, ast.Name) and f.id == "loop"
    )


def _find_outer(node: ast.AST) -> tuple[ast.For | None, list[ast.stmt]]:
    """The first `for ... in florql.loop(...)` and the statements that run after it."""
    for body in _blocks(node):
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.For) and _is_loop_call(stmt.iter):
                return stmt, body[i + 1 :]
            found, after = _find_outer(stmt)
            if found is not None:
                return found, after + body[i + 1 :]
    return None, []


def _blocks(node: ast.AST) -> list[list[ast.stmt]]:
    """Statement lists directly inside `node` (bodies of defs, ifs, withs, trys, loops)."""
    out = []
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            out.append(block)
    for h in getattr(node, "handlers", []) or []:
        out.append(h.body)
    return out


def _find_inner(body: list[ast.stmt]) -> tuple[ast.For | None, list[ast.stmt]]:
    """The first florql.loop `for` in `body` (at any nesting of blocks) and what follows it."""
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.For) and _is_loop_call(stmt.iter):
            return stmt, body[i + 1 :]
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for block in _blocks(stmt):
            inner, later = _find_inner(block)
            if inner is not None:
                return inner, later + body[i + 1 :]
    return None, []


def _stored_names(node: ast.AST) -> set[str]:
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
    return names


def _loaded_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


# --- reading and writing a running frame ---------------------------------------------------


def read(frame: FrameType, names: tuple[str, ...]) -> dict[str, Any]:
    """The current values of `names` in `frame` (those that are bound)."""
    if not names:
        return {}
    scope = frame.f_locals if frame.f_code.co_name != "<module>" else frame.f_globals
    return {n: scope[n] for n in names if n in scope}


def write(frame: FrameType, values: dict[str, Any]) -> None:
    """Bind `values` in `frame`: module globals, or a function's locals.

    Function locals need `PyFrame_LocalsToFast` on Python 3.11/3.12; from 3.13 `f_locals` is a
    write-through proxy.
    """
    if not values:
        return
    if frame.f_code.co_name == "<module>" or frame.f_locals is frame.f_globals:
        frame.f_globals.update(values)
        return
    f_locals = frame.f_locals
    for k, v in values.items():
        f_locals[k] = v
    if sys.version_info < (3, 13):
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
