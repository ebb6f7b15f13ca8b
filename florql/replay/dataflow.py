"""How new helper variables flow: which helpers new log statements need, and which values
would cross outer-loop iterations (something a replay from checkpoints cannot reproduce).

A replay restores an outer iteration from its checkpoint without running the iterations before
it, and checkpoints hold only the recorded run's state. So a helper value that a new statement
reads must be computed afresh within the same iteration before it is read: a value carried from
one iteration to the next (`best = max(best, acc)`), or out of the loop, would be whatever the
replay happened to run, not what a from-scratch run of the edited script computes (invariant 7).

>>> sorted(flow(ast.parse("g = a\\nflorql.log('g', g + b)").body, frozenset())[0])
['a', 'b', 'florql']
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from florql.replay.effects import changed_names
from florql.replay.syntax import Aliases, free_names, is_compound, logged_name, own_parts


@dataclass(frozen=True)
class Flow:
    """A spliced statement's traffic in new helper variables, for `carried`."""

    stmt: ast.stmt
    scope: int  # id of the recorded scope (module or function) it runs in
    unassigned_reads: frozenset[str]  # read before this iteration surely assigned them
    changes: frozenset[str]
    in_outer: bool  # inside one iteration of the outer loop (or a function called there)
    outer_name: str


def carried(flows: list[Flow]) -> tuple[Flow, list[str], str] | None:
    """The first statement reading, before its iteration surely assigned them, names that new
    statements inside the outer loop set: (its flow, those names, the loop's name); or None."""
    in_loop: dict[int, dict[str, str]] = {}
    for f in flows:
        if f.in_outer:
            for name in f.changes:
                in_loop.setdefault(f.scope, {}).setdefault(name, f.outer_name)
    for f in flows:
        names = sorted(f.unassigned_reads & set(in_loop.get(f.scope, {})))
        if names:
            return f, names, in_loop[f.scope][names[0]] or "outer"
    return None


def carried_reason(names: list[str], loop: str) -> str:
    """Why a statement reading a carried value cannot replay, and what to write instead."""
    return (
        f"it reads {', '.join(names)}, which new code sets inside the {loop} loop and this "
        "statement may see from an earlier iteration (or after the loop); a replay restores "
        "iterations from checkpoints without running the ones before, so that value is unknown; "
        "compute it afresh in each iteration (or log per-iteration values and aggregate in SQL, "
        f"e.g. MAX(x) OVER (ORDER BY {loop}))"
    )


# Simple statements that may be helpers of new log statements (effects.py vets them).
HELPER_SIMPLE = (
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.Import,
    ast.ImportFrom,
    ast.Delete,
    ast.Global,
    ast.Nonlocal,
)


def demand(cur: ast.Module, rec: ast.Module, aliases: Aliases, names: set[str]) -> set[str]:
    """Names that new statements logging `names` may need computed (an over-approximation).

    Those read by the statements holding such a log call and by the headers of the blocks
    around them, then, repeatedly, the same for statements not in the recorded code that
    assign or change a needed name.
    """
    parents = {id(c): p for p in ast.walk(cur) for c in ast.iter_child_nodes(p)}

    def around(node: ast.AST) -> set[str]:
        out: set[str] = set()
        up: ast.AST | None = node
        while up is not None and not isinstance(up, ast.Module):
            if isinstance(up, ast.stmt):
                parts = own_parts(up) if is_compound(up) else [up]
                out |= set().union(*(loads(p) for p in parts))
            up = parents.get(id(up))
        return out

    need: set[str] = set()
    for node in ast.walk(cur):
        if logged_name(node, aliases) in names:
            need |= around(node)
    recorded = {ast.dump(n) for n in ast.walk(rec) if isinstance(n, ast.stmt)}
    candidates = [
        n
        for n in ast.walk(cur)
        if isinstance(n, ast.stmt) and not is_compound(n) and ast.dump(n) not in recorded
    ]
    grew = True
    while grew:
        grew = False
        for n in candidates:
            if changed_names(n) & need and not (more := around(n)) <= need:
                need |= more
                grew = True
    return need


def loads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def binds(stmt: ast.stmt) -> set[str]:
    """Names a statement binds in its scope, imports included."""
    out = stored_names(stmt)
    for n in ast.walk(stmt):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
    return out


def used(scope: ast.AST) -> set[str]:
    """Every name the recorded scope mentions (nested functions included: conservative)."""
    return {n.id for n in ast.walk(scope) if isinstance(n, ast.Name)}


def stored_names(stmt: ast.stmt) -> set[str]:
    """Names a statement binds in its scope (not those local to its comprehensions)."""
    inner: set[int] = set()
    for n in ast.walk(stmt):
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)):
            inner.update(id(m) for m in ast.walk(n))
    return {
        n.id
        for n in ast.walk(stmt)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and id(n) not in inner
    }


def flow(stmts: list[ast.stmt], assigned: frozenset[str]) -> tuple[set[str], frozenset[str]]:
    """(names `stmts` may read before they are assigned, names surely assigned after them).

    `assigned` are the names surely assigned before `stmts` run. A loop's body may run zero
    times and only one branch of an `if` runs, so neither adds to what is surely assigned.

    >>> flow(ast.parse("a = b\\nc = a + d\\nfor i in r: e = i\\nf += 1").body, frozenset())[0] == {"b", "d", "r", "f"}
    True
    >>> sorted(flow(ast.parse("best = max(best, acc)").body, frozenset({"acc"}))[0])
    ['best', 'max']
    """
    reads: set[str] = set()
    done = set(assigned)
    for s in stmts:
        if isinstance(s, (ast.For, ast.AsyncFor)):
            reads |= free_names(s.iter) - done
            inner = frozenset(done | _target_names(s.target))
            reads |= flow(s.body, inner)[0] | flow(s.orelse, frozenset(done))[0]
        elif isinstance(s, (ast.While, ast.If)):
            reads |= free_names(s.test) - done
            reads |= flow(s.body, frozenset(done))[0] | flow(s.orelse, frozenset(done))[0]
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            for item in s.items:
                reads |= free_names(item.context_expr) - done
                if item.optional_vars is not None:
                    done |= _target_names(item.optional_vars)
            body_reads, after = flow(s.body, frozenset(done))
            reads |= body_reads
            done |= after
        elif isinstance(s, (ast.Assign, ast.AnnAssign)):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            value = [s.value] if s.value is not None else []
            reads |= set().union(*(free_names(n) for n in [*value, *targets])) - done
            done |= set().union(*(_target_names(t) for t in targets))
        elif isinstance(s, ast.AugAssign):
            reads |= (free_names(s.value) | free_names(s.target) | _target_names(s.target)) - done
        elif isinstance(s, (ast.Import, ast.ImportFrom)):
            done |= {(a.asname or a.name).split(".")[0] for a in s.names}
        else:
            reads |= free_names(s) - done
    return reads, frozenset(done)


def _target_names(target: ast.AST) -> set[str]:
    """Names an assignment target binds (`a`, `a, (b, *c)`), not the bases of `x.y` / `x[i]`."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(e) for e in target.elts))
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return set()
