"""Script variables a restored outer iteration must hold: what the loop carries (static part).

A checkpoint restores the registered objects and the RNG; to be exact (invariant 7) a restored
iteration must also hold the script's own state that the recorded run carried into it: a
learning rate annealed by hand (`lr /= 4`), a best-so-far score, a step counter, a history
list, a running sum the inner loop computed and later code reads. `plan` finds the candidates
statically, once per run, from the two loops the session saw at run time (the outer loop's
`for` and the first inner loop's `for`, located by file and line, so an inner loop inside a
`train()` function is found as well):

- `outer`: names of the outer loop's scope (module globals, or the locals of the function that
  runs it) that its body assigns and that may be read before being reassigned: later in the
  same iteration after the inner loop, in the next iteration (read before any unconditional
  assignment of the body), after the loop, or (module scope) by any function of the module;
- `inner`: when the inner loop runs in another function, that function's locals the inner loop
  assigns or changes in place and the function reads after it (`total` in `return total / n`,
  a meter updated in the loop and read after it);
- `globals`: module globals that functions assign through `global` (`global global_step`),
  or, when the outer loop runs in a function, change in place (`SEEN.append(v)`);
- `receivers`: names of the outer scope the loop changes in place without assigning them
  (`history.append(v)`, `args.lr = ...`, `stopper.step(val)`, an optimizer nobody registered):
  the session captures those whose state it can read (containers, namespaces, `state_dict()`).

Values are read at the inner loop's end and written back where the skipped inner loop would
start (florql/loopstate.py does the typing; this module knows syntax and frames only).

>>> src = '''
... import florql
... lr, best, hist = 1.0, None, []
... def train():
...     global step
...     total = 0
...     for i in florql.loop("step", range(4)):
...         total += i
...         step += 1
...     return total
... for epoch in florql.loop("epoch", range(3)):
...     t = train()
...     hist.append(t)
...     if best is None or t < best:
...         best = t
...     else:
...         lr /= 4
... '''
>>> import ast
>>> tree = ast.parse(src)
>>> p = plan(tree, 11, tree, 7, same_frame=False, outer_is_module=True)
>>> p.outer, p.inner, p.globals, p.receivers
(('best', 'lr', 'step'), ('total',), (), ('hist',))
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_LOOPS = (ast.For, ast.AsyncFor)


@dataclass(frozen=True)
class VarPlan:
    """Names to capture per scope (see the module docstring); all sorted."""

    outer: tuple[str, ...] = ()
    inner: tuple[str, ...] = ()
    globals: tuple[str, ...] = ()
    receivers: tuple[str, ...] = ()
    # Assigned by the loop but read by no recorded code after the restore point: a new
    # hindsight statement may read them (`florql.log("last", loss.item())` after the loop).
    extra_outer: tuple[str, ...] = ()
    extra_inner: tuple[str, ...] = ()


def plan(
    outer_tree: ast.Module,
    outer_line: int,
    inner_tree: ast.Module | None,
    inner_line: int | None,
    *,
    same_frame: bool,
    outer_is_module: bool,
) -> VarPlan:
    """The names to capture for an outer loop at `outer_line` whose first inner loop is at
    `inner_line` (of `inner_tree`, which may be another module's); VarPlan() when the outer
    loop cannot be found."""
    found = _loop_at(outer_tree, outer_line)
    if found is None:
        return VarPlan()
    outer, scope, after = found
    body = outer.body
    assigned = _stores(body) - _stores(outer.target)
    wanted = _exposed(body, set())[0] | _loads(after)
    inner_found = _loop_at(inner_tree, inner_line) if inner_tree and inner_line else None
    if same_frame and inner_found is not None:
        wanted |= _exposed(_following(body, inner_found[0]) or [], set())[0]
    elif inner_found is not None:
        anchor = _calls_of(body, getattr(inner_found[1], "name", ""))
        wanted |= _exposed(anchor, set())[0] if anchor is not None else _loads(body)
    module_globals = _global_assignments(outer_tree)
    receivers = _receivers(body)
    if outer_is_module:
        wanted |= _function_reads(outer_tree)
        assigned |= module_globals
        receivers |= _receivers(after) | _function_receivers(outer_tree)
    outer_names = assigned & wanted
    inner_names: set[str] = set()
    if inner_found is not None and not same_frame:
        loop, fn, inner_after = inner_found
        local = (_stores(getattr(fn, "body", [])) | _params(fn)) - _declared_global(fn)
        changed = _stores(loop.body) | (_receivers(loop.body) & local)
        inner_names = changed & _loads(inner_after)
    receivers -= (
        outer_names | _stores(outer.target) | _all_imports(outer_tree) | _code_names(outer_tree)
    )
    globals_ = set() if outer_is_module else set(module_globals)
    if not outer_is_module:  # module objects the loop's functions change (`SEEN.append(v)`)
        shared = _function_receivers(outer_tree) & _stores(outer_tree.body)
        shared -= _all_imports(outer_tree) | _code_names(outer_tree)
        globals_ |= shared
        receivers |= shared
    if not outer_is_module and isinstance(scope, ast.AST):
        receivers -= _params(scope)
    extra_inner = set()
    if inner_found is not None and not same_frame:
        extra_inner = _stores(inner_found[0].body) - inner_names
    return VarPlan(
        tuple(sorted(outer_names)),
        tuple(sorted(inner_names)),
        tuple(sorted(globals_)),
        tuple(sorted(receivers)),
        tuple(sorted(assigned - outer_names - module_globals)),
        tuple(sorted(extra_inner)),
    )


# --- finding the loops ------------------------------------------------------------------------


def _loop_at(tree: ast.Module, line: int) -> tuple[ast.For, ast.AST, list[ast.stmt]] | None:
    """The `for` whose header spans `line`, its scope (module or def), and the statements of
    that scope that run after it."""
    best: tuple[ast.For, ast.AST, list[ast.stmt]] | None = None

    def visit(body: list[ast.stmt], scope: ast.AST, after: list[ast.stmt]) -> None:
        nonlocal best
        for i, stmt in enumerate(body):
            rest = body[i + 1 :] + after
            if isinstance(stmt, _LOOPS) and stmt.lineno <= line <= _header_end(stmt):
                best = (stmt, scope, rest)  # type: ignore[assignment]
            inner_scope = (
                stmt if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
            )
            for block in _blocks(stmt):
                visit(block, inner_scope, [] if inner_scope is not scope else rest)

    visit(tree.body, tree, [])
    return best


def _header_end(loop: ast.For | ast.AsyncFor) -> int:
    return max(loop.iter.end_lineno or loop.lineno, loop.target.end_lineno or loop.lineno)


def _blocks(node: ast.AST) -> list[list[ast.stmt]]:
    """Statement lists directly inside `node` (bodies of defs, ifs, withs, trys, loops)."""
    out = []
    for name in ("body", "orelse", "finalbody"):
        block = getattr(node, name, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            out.append(block)
    out += [h.body for h in getattr(node, "handlers", []) or []]
    out += [c.body for c in getattr(node, "cases", []) or []]
    return out


def _following(body: list[ast.stmt], target: ast.stmt) -> list[ast.stmt] | None:
    """Statements of `body` (at any block depth) that run after `target` within one pass."""
    for i, stmt in enumerate(body):
        if stmt is target:
            return body[i + 1 :]
        if isinstance(stmt, _DEFS):
            continue
        for block in _blocks(stmt):
            inner = _following(block, target)
            if inner is not None:
                return inner + body[i + 1 :]
    return None


def _calls_of(body: list[ast.stmt], func: str) -> list[ast.stmt] | None:
    """Statements after the first statement of `body` that calls `func` (the inner loop's
    function), with the calling statement itself; None when no call is found."""
    for i, stmt in enumerate(body):
        for node in _walk(stmt):
            if isinstance(node, ast.Call) and _callee(node.func) == func:
                return body[i:]
    return None


def _callee(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


# --- names --------------------------------------------------------------------------------------


def _walk(node: ast.AST | list) -> list[ast.AST]:
    """Nodes under `node` in its own scope (not inside nested defs, lambdas or classes)."""
    out: list[ast.AST] = []
    stack: list[Any] = list(node) if isinstance(node, list) else [node]
    while stack:
        n = stack.pop()
        out.append(n)
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, _DEFS):
                stack.append(child)
    return out


def _stores(node: ast.AST | list) -> set[str]:
    names = set()
    for n in _walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
    return names - _comprehension_vars(node)


def _loads(node: ast.AST | list) -> set[str]:
    """Names read (an augmented assignment `x += 1` reads `x` too)."""
    out = set()
    for n in _walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            out.add(n.target.id)
    return out - _comprehension_vars(node)


def _comprehension_vars(node: ast.AST | list) -> set[str]:
    out: set[str] = set()
    for n in _walk(node):
        if isinstance(n, ast.comprehension):
            out |= {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)}
    return out


def _exposed(body: list[ast.stmt], killed: set[str]) -> tuple[set[str], set[str]]:
    """Names `body` may read before assigning them (one pass, from the top), and the names
    it surely assigns."""
    exposed: set[str] = set()
    killed = set(killed)
    for stmt in body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            exposed |= _loads(stmt) - killed  # every read happens before the assignment
            killed |= _target_names(stmt)
        elif isinstance(stmt, ast.If):
            exposed |= _loads(stmt.test) - killed
            e1, k1 = _exposed(stmt.body, killed)
            e2, k2 = _exposed(stmt.orelse, killed)
            exposed |= e1 | e2
            killed = k1 & k2
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                exposed |= _loads(item.context_expr) - killed
                if item.optional_vars is not None:
                    killed |= _stores(item.optional_vars)
            e, killed = _exposed(stmt.body, killed)
            exposed |= e
        elif isinstance(stmt, _LOOPS):
            exposed |= _loads(stmt.iter) - killed
            exposed |= _exposed(stmt.body, killed | _stores(stmt.target))[0]
            exposed |= _exposed(stmt.orelse, killed)[0]
        elif isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            killed |= _stores(stmt) | _imported(stmt)
        else:  # AugAssign reads its target first; while, try, match: taken whole
            exposed |= _loads(stmt) - killed
    return exposed, killed


def _target_names(stmt: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    return {
        n.id
        for tgt in targets
        for n in ast.walk(tgt)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _imported(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    return set()


def _all_imports(tree: ast.Module) -> set[str]:
    return {n for s in ast.walk(tree) if isinstance(s, ast.stmt) for n in _imported(s)}


def _code_names(tree: ast.Module) -> set[str]:
    """Names of functions and classes the module defines, and builtins: code, not state."""
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {n.name for n in ast.walk(tree) if isinstance(n, defs)} | set(dir(builtins))


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _params(fn: ast.AST) -> set[str]:
    args = getattr(fn, "args", None)
    if args is None:
        return set()
    every = args.posonlyargs + args.args + args.kwonlyargs
    every += [a for a in (args.vararg, args.kwarg) if a is not None]
    return {a.arg for a in every}


def _declared_global(fn: ast.AST) -> set[str]:
    return {n for s in _walk(fn) if isinstance(s, ast.Global) for n in s.names}


def _global_assignments(tree: ast.Module) -> set[str]:
    """Module globals that functions assign through a `global` statement."""
    out: set[str] = set()
    for fn in _functions(tree):
        out |= _declared_global(fn) & _stores(fn.body)
    return out


def _function_reads(tree: ast.Module) -> set[str]:
    """Module globals that functions read (names they neither bind nor take as parameters)."""
    return _globals_used(tree, _loads)


def _globals_used(tree: ast.Module, names: Any) -> set[str]:
    """`names(body)` of every function, less the function's own locals and parameters."""
    out: set[str] = set()
    for fn in _functions(tree):
        local = (_stores(fn.body) | _params(fn)) - _declared_global(fn)
        out |= names(fn.body) - local
    return out


def _function_receivers(tree: ast.Module) -> set[str]:
    """Module globals that functions change in place (see `_receivers`)."""
    return _globals_used(tree, _receivers)


def _receivers(node: ast.AST | list) -> set[str]:
    """Names changed in place: `x.m(...)` calls, `x.a = ...`, `x[i] = ...`, `x.a += ...`,
    also through a chain (`history["val"].append(v)` changes `history`), and objects called
    (`aux(x)`: a model an optimizer steps; the session keeps only those whose state changed)."""
    out: set[str] = set()
    for n in _walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            root = _root(n.func.value)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            root = n.func.id
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, ast.Store):
            root = _root(n.value)
        else:
            continue
        if root is not None:
            out.add(root)
    return out


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


# --- reading and writing a running frame ---------------------------------------------------


def scope_of(frame: FrameType) -> dict[str, Any]:
    """The namespace a frame's names live in: module globals, or a function's locals."""
    return frame.f_globals if is_module_frame(frame) else frame.f_locals


def is_module_frame(frame: FrameType) -> bool:
    return frame.f_code.co_name == "<module>" or frame.f_locals is frame.f_globals


def read(frame: FrameType, names: tuple[str, ...]) -> dict[str, Any]:
    """The current values of `names` in `frame` (those that are bound)."""
    if not names:
        return {}
    scope = scope_of(frame)
    return {n: scope[n] for n in names if n in scope}


def write(frame: FrameType, values: dict[str, Any]) -> None:
    """Bind `values` in `frame`: module globals, or a function's locals.

    Function locals need `PyFrame_LocalsToFast` on Python 3.11/3.12; from 3.13 `f_locals` is a
    write-through proxy.
    """
    if not values:
        return
    if is_module_frame(frame):
        frame.f_globals.update(values)
        return
    f_locals = frame.f_locals
    for k, v in values.items():
        f_locals[k] = v
    if sys.version_info < (3, 13):
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
