"""Stop a skipped iteration once its new per-epoch values are logged.

A per-epoch hindsight statement replays by restoring the checkpoint taken where the iteration's
inner loop ended, skipping that loop, and running the rest of the iteration. When the next
replayed iteration restores its own checkpoint anyway, whatever the iteration runs after its
last new statement (an evaluation pass, a scheduler step) changes nothing the replay keeps. So
the spliced code gets, right after the outer-loop body statement holding the last new statement,

    if __import__("florql").api._replay_rest_unneeded(): continue

and the replay runtime answers True only in that case (docs/INTERFACES.md §3). In a recording,
or when the rest of the iteration is needed (the next step re-executes from this state, or the
script runs to its end), it answers False and the code runs as recorded.

The guard is added only when every new statement sits inside the body of the outermost florql
loop, after its first inner loop, and the body statement it follows does not share its line
with another statement.

>>> src = '''import florql
... for epoch in florql.loop("epoch", range(3)):
...     for step in florql.loop("step", range(2)):
...         pass
...     florql.log("w", epoch)
...     evaluate()
... '''
>>> print(add_iteration_exit(src, {"w"}, "epoch"))  # doctest: +NORMALIZE_WHITESPACE
import florql
for epoch in florql.loop("epoch", range(3)):
    for step in florql.loop("step", range(2)):
        pass
    florql.log("w", epoch)
    if __import__("florql").api._replay_rest_unneeded(): continue
    evaluate()
"""

from __future__ import annotations

import ast

from florql.replay.syntax import Aliases, logged_name, loop_name

GUARD = 'if __import__("florql").api._replay_rest_unneeded(): continue'


def add_iteration_exit(text: str, names: set[str], outer_name: str) -> str:
    """`text` with the guard after the last statement logging one of `names` (see module doc).

    `outer_name` is the name of the outermost florql loop the statements sit in. Returns `text`
    unchanged when the guard would not be safe to add.
    """
    tree = ast.parse(text)
    aliases = Aliases.of(tree)
    outer = _outer_loop(tree, aliases, outer_name)
    if outer is None:
        return text
    calls = [n for n in ast.walk(tree) if logged_name(n, aliases) in names]
    inside = [c for c in calls if _within(c, outer)]
    if not calls or len(inside) != len(calls):
        return text
    first_inner = next((i for i, s in enumerate(outer.body) if _has_loop(s, aliases)), None)
    holders = [i for i, s in enumerate(outer.body) if any(_within(c, s) for c in calls)]
    if first_inner is None or min(holders) <= first_inner:
        return text
    last = outer.body[max(holders)]
    nxt = outer.body[max(holders) + 1] if max(holders) + 1 < len(outer.body) else None
    end = last.end_lineno or last.lineno
    if nxt is not None and nxt.lineno == end:
        return text  # `a; b` on one line: no place for the guard between them
    lines = text.splitlines(keepends=True)
    if not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    lines.insert(end, " " * last.col_offset + GUARD + "\n")
    return "".join(lines)


def _outer_loop(tree: ast.AST, aliases: Aliases, name: str) -> ast.For | None:
    found = [n for n in ast.walk(tree) if isinstance(n, ast.For) and loop_name(n, aliases) == name]
    return found[0] if len(found) == 1 else None  # two loops of that name: cannot tell which


def _has_loop(stmt: ast.stmt, aliases: Aliases) -> bool:
    return any(isinstance(n, ast.For) and loop_name(n, aliases) for n in ast.walk(stmt))


def _within(node: ast.AST, stmt: ast.stmt) -> bool:
    return stmt.lineno <= getattr(node, "lineno", -1) <= (stmt.end_lineno or stmt.lineno)
