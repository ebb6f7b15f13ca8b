"""The args a script's code declares, read from its source before it runs.

`florql record --arg NAME=VALUE` is checked against them: a VALUE that does not convert to the
type of a literal default (`florql.arg("epochs", 3)` with `--arg epochs=two`) is bad input
before the script starts, and a NAME no call declares is reported as soon as the script starts
using args (with the closest declared name), not only when the run ends.

Found statically, in the script and its local modules: calls `florql.arg("name", default)` or
`arg("name", default)` (imported from florql). A call whose name is not a literal makes the set
unknown (`Declared.names` is None): then only the end of the run can tell.

>>> d = scan({"train.py": "import florql\\nlr = florql.arg('lr', 0.1)\\nn = florql.arg('n', N)\\n"})
>>> sorted(d.names), d.defaults
(['lr', 'n'], {'lr': 0.1})
>>> scan({"t.py": "import florql\\nfor k in ks: florql.arg(k, 1)\\n"}).names is None
True
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from typing import Any

from florql.errors import BadInputError


@dataclass
class Declared:
    """Arg names declared in the code (None: unknown) and their literal defaults."""

    names: frozenset[str] | None = frozenset()
    defaults: dict[str, Any] = field(default_factory=dict)


def scan(sources: dict[str, str]) -> Declared:
    """The args `sources` ({path: text}) declare."""
    names: set[str] = set()
    defaults: dict[str, Any] = {}
    dynamic = False
    for text in sources.values():
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for call in _arg_calls(tree):
            first = call.args[0] if call.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                dynamic = True
                continue
            names.add(first.value)
            default = _literal(call.args[1] if len(call.args) > 1 else None)
            if default is not _UNKNOWN:
                defaults[first.value] = default
    return Declared(None if dynamic else frozenset(names), defaults)


def check_overrides(overrides: dict[str, str], declared: Declared) -> None:
    """Raise BadInputError for an `--arg` value its literal default's type refuses.

    >>> check_overrides({"epochs": "two"}, Declared(frozenset({"epochs"}), {"epochs": 3}))
    Traceback (most recent call last):
    ...
    florql_storage.errors.BadInputError: --arg epochs=two: cannot convert to int (the default is 3)
    """
    for name, text in overrides.items():
        if name in declared.defaults:
            cast_override(name, text, declared.defaults[name])


def cast_override(name: str, text: Any, default: Any) -> Any:
    """Cast a `--arg` string to the type of `default`.

    >>> cast_override("lr", "0.5", 1.0), cast_override("n", "3", 1), cast_override("f", "true", False)
    (0.5, 3, True)
    """
    if not isinstance(text, str) or isinstance(default, str) or default is None:
        return text
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise BadInputError(
            f"--arg {name}={text}: cannot convert to {type(default).__name__} "
            f"(the default is {default!r})"
        ) from None
    return text


_UNKNOWN = object()


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return _UNKNOWN
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNKNOWN


def _arg_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of florql.arg / arg (a bare `arg` counts only if imported from florql)."""
    bare = any(
        isinstance(n, ast.ImportFrom)
        and n.module in ("florql", "florql.api")
        and any(a.name == "arg" and a.asname is None for a in n.names)
        for n in ast.walk(tree)
    )
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "arg" and _is_florql(f.value)) or (
            bare and isinstance(f, ast.Name) and f.id == "arg"
        ):
            out.append(node)
    return out


def _is_florql(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "florql"


def unknown_override(name: str, known: set[str], parsed: dict[str, Any]) -> str:
    """The warning for `--arg name=...` that no florql.arg in the script's code declares."""
    if name in parsed:
        return (
            f"--arg {name} sets florql.arg values only, and the script reads {name} from its "
            f"command line (argparse): pass --{name.replace('_', '-')} VALUE after the script"
        )
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean --arg {close[0]}=...?" if close else ""
    declared = ", ".join(sorted(known)) or "none"
    return (
        f"--arg {name} names no florql.arg of the script (it declares: {declared}); "
        f"it will have no effect{hint}"
    )
