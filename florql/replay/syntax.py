"""Reading florql calls out of Python syntax trees: which calls log, which loops are florql loops.

A script may write `import florql`, `import florql as fl` or `from florql import log, loop`;
`Aliases` remembers which local names mean the module and which mean the functions, so that
`fl.log("x", v)` and `log("x", v)` are both recognised. Only calls whose first argument is a
string literal name a variable statically; others are ignored (they cannot be matched to a
query's names anyway).

>>> tree = ast.parse('import florql as fl\\nfor e in fl.loop("epoch", range(3)):\\n    fl.log("loss", 1.0)')
>>> aliases = Aliases.of(tree)
>>> [logged_name(n, aliases) for n in ast.walk(tree) if isinstance(n, ast.Call)]
[None, None, 'loss']
>>> loop_name(tree.body[1], aliases)
'epoch'
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field

_COMPOUND: tuple[type[ast.stmt], ...] = (
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.If,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
)
if hasattr(ast, "TryStar"):  # Python 3.11+
    _COMPOUND = (*_COMPOUND, ast.TryStar)
_COMPOUND = (*_COMPOUND, ast.Match)

BUILTIN_NAMES = frozenset(dir(builtins)) | {"__file__", "__name__", "__builtins__", "__doc__"}


@dataclass
class Aliases:
    """Local names bound to the florql module, and to its `log` / `loop` functions."""

    modules: set[str] = field(default_factory=set)
    log_funcs: set[str] = field(default_factory=set)
    loop_funcs: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, tree: ast.AST) -> Aliases:
        found = cls()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "florql":
                        found.modules.add(a.asname or "florql")
            elif isinstance(node, ast.ImportFrom) and node.module == "florql":
                for a in node.names:
                    if a.name == "log":
                        found.log_funcs.add(a.asname or "log")
                    elif a.name == "loop":
                        found.loop_funcs.add(a.asname or "loop")
        if not found.modules and not found.log_funcs:
            found.modules.add("florql")  # unimported: still recognise the canonical spelling
        return found

    def merged(self, other: Aliases) -> Aliases:
        return Aliases(
            self.modules | other.modules,
            self.log_funcs | other.log_funcs,
            self.loop_funcs | other.loop_funcs,
        )


def _is_call_to(node: ast.AST, attr: str, modules: set[str], funcs: set[str]) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f.attr == attr and f.value.id in modules
    return isinstance(f, ast.Name) and f.id in funcs


def _literal_first_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    for kw in call.keywords:
        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
            return kw.value.value if isinstance(kw.value.value, str) else None
    return None


def logged_name(node: ast.AST, aliases: Aliases) -> str | None:
    """The literal name a `florql.log(...)` call logs, or None for anything else."""
    if _is_call_to(node, "log", aliases.modules, aliases.log_funcs):
        assert isinstance(node, ast.Call)
        return _literal_first_arg(node)
    return None


def loop_name(stmt: ast.AST, aliases: Aliases) -> str | None:
    """For `for ... in florql.loop("name", ...)`: the name; "" for any other loop; None otherwise."""
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        if _is_call_to(stmt.iter, "loop", aliases.modules, aliases.loop_funcs):
            assert isinstance(stmt.iter, ast.Call)
            return _literal_first_arg(stmt.iter) or ""
        return ""
    if isinstance(stmt, ast.While):
        return ""
    return None


def logged_names(tree: ast.AST, aliases: Aliases | None = None) -> set[str]:
    """Every literal name logged anywhere in `tree`.

    >>> sorted(logged_names(ast.parse('import florql\\nflorql.log("a", 1); florql.log("b", 2)')))
    ['a', 'b']
    """
    aliases = aliases or Aliases.of(tree)
    names = set()
    for node in ast.walk(tree):
        n = logged_name(node, aliases)
        if n is not None:
            names.add(n)
    return names


def is_compound(stmt: ast.stmt) -> bool:
    return isinstance(stmt, _COMPOUND)


def child_bodies(stmt: ast.stmt) -> list[tuple[str, list[ast.stmt]]]:
    """The statement lists nested in a compound statement, each with a stable label."""
    out: list[tuple[str, list[ast.stmt]]] = []
    for fname in ("body", "orelse", "finalbody"):
        body = getattr(stmt, fname, None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            out.append((fname, body))
    for i, h in enumerate(getattr(stmt, "handlers", []) or []):
        out.append((f"handlers[{i}]", h.body))
    for i, c in enumerate(getattr(stmt, "cases", []) or []):
        out.append((f"cases[{i}]", c.body))
    return out


def header_key(stmt: ast.stmt, aliases: Aliases) -> str:
    """What identifies a compound statement regardless of the statements inside it.

    >>> a = Aliases.of(ast.parse("import florql"))
    >>> header_key(ast.parse('for i in florql.loop("step", xs): pass').body[0], a)
    'loop:step'
    >>> header_key(ast.parse('def f(x):\\n    return x').body[0], a)
    'FunctionDef:f'
    """
    name = loop_name(stmt, aliases)
    if name:
        return f"loop:{name}"
    kind = type(stmt).__name__
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return f"{kind}:{stmt.name}"
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return f"{kind}:{ast.dump(stmt.target)} in {ast.dump(stmt.iter)}"
    if isinstance(stmt, (ast.While, ast.If)):
        return f"{kind}:{ast.dump(stmt.test)}"
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return f"{kind}:{[ast.dump(i) for i in stmt.items]}"
    if isinstance(stmt, ast.Match):
        return f"{kind}:{ast.dump(stmt.subject)}"
    return kind


class _Unwrap(ast.NodeTransformer):
    """Replaces `florql.log(<new name>, expr)` by `expr`: what the statement computes without it."""

    def __init__(self, aliases: Aliases, new_names: set[str]) -> None:
        self.aliases = aliases
        self.new_names = new_names

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = logged_name(node, self.aliases)
        if name in self.new_names and len(node.args) >= 2:
            return node.args[1]
        return node


def unwrapped_dump(stmt: ast.stmt, aliases: Aliases, new_names: set[str]) -> str:
    """`ast.dump` of a simple statement with new log calls replaced by the values they log."""
    import copy

    return ast.dump(_Unwrap(aliases, new_names).visit(copy.deepcopy(stmt)))


def contains_new_log(node: ast.AST, aliases: Aliases, new_names: set[str]) -> bool:
    return any(logged_name(n, aliases) in new_names for n in ast.walk(node))


def own_parts(stmt: ast.stmt) -> list[ast.AST]:
    """The parts of a statement outside its nested statement lists (header expressions)."""
    nested = {id(s) for _, body in child_bodies(stmt) for s in body}
    out = []
    for _, value in ast.iter_fields(stmt):
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, ast.AST) and id(item) not in nested:
                if isinstance(item, (ast.excepthandler,)) or (
                    hasattr(ast, "match_case") and isinstance(item, ast.match_case)
                ):
                    continue
                out.append(item)
    return out


def bound_names(scope: ast.AST) -> set[str]:
    """Names a function or module body binds, not looking inside nested scopes.

    >>> sorted(bound_names(ast.parse('import os as o\\nx, y = 1, 2\\nfor i in r: pass\\ndef f(a): b = 1')))
    ['f', 'i', 'o', 'x', 'y']
    """
    names: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                names.add(arg.arg)
    body = getattr(scope, "body", [])
    todo: list[ast.AST] = list(body) if isinstance(body, list) else [body]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(
            node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
        ):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for al in node.names:
                names.add((al.asname or al.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        todo.extend(ast.iter_child_nodes(node))
    return names


def free_names(node: ast.AST) -> set[str]:
    """Names `node` reads that it does not bind itself (comprehension and lambda variables).

    >>> sorted(free_names(ast.parse('f(x, [i * y for i in z], lambda q: q + w)')))
    ['f', 'w', 'x', 'y', 'z']
    """
    loads: set[str] = set()
    local: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else local).add(n.id)
        elif isinstance(n, ast.arg):
            local.add(n.arg)
    return loads - local
