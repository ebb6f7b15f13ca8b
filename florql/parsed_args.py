"""argparse settings as the run's args.

A script run by `florql record` has the namespace its `ArgumentParser.parse_args` (or
`parse_known_args`, which `parse_args` calls) returns recorded as the run's args: `runs.args`
and one `logs` column per setting, with the same column rules as `florql.arg` values. Under
plain `python train.py`, `florql.args(namespace_or_dict)` records one explicitly.

The patch lives only while the recorded script runs (`patched`). A parse nested inside another
(a subparser) is recorded once, by the outermost call, whose namespace holds it. The parse
itself is untouched: the same namespace comes back, and a parse that fails (`--help`, a bad
option) records nothing.

>>> import argparse
>>> as_dict(argparse.Namespace(lr=0.5, tag="a")), as_dict({"lr": 0.5})
({'lr': 0.5, 'tag': 'a'}, {'lr': 0.5})
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from florql.values import is_loggable, is_utf8


def as_dict(values: Any) -> dict[str, Any]:
    """The settings of an argparse Namespace (or any object with attributes) or a mapping.

    Raises:
        TypeError: `values` is neither.
    """
    if isinstance(values, Mapping):
        return dict(values)
    if isinstance(values, argparse.Namespace) or hasattr(values, "__dict__"):
        return dict(vars(values))
    raise TypeError(
        f"florql.args takes an argparse Namespace or a dict, not {type(values).__name__}; "
        "write florql.args(parser.parse_args())"
    )


@contextlib.contextmanager
def patched(session: Any) -> Iterator[None]:
    """While inside, every outermost argparse parse records its namespace in `session`."""
    original = argparse.ArgumentParser.parse_known_args
    depth = threading.local()

    def parse_known_args(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        level = getattr(depth, "n", 0)
        depth.n = level + 1
        try:
            result = original(self, *args, **kwargs)
        finally:
            depth.n = level
        if level == 0:
            session.record_args(as_dict(result[0]), strict=False)
        return result

    argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]


def storable(value: Any) -> Any:
    """`value` if florql.log could store it, else its str() (a Path, an open file), cut short.

    >>> import pathlib
    >>> storable(0.5), storable(pathlib.Path("runs/a"))
    (0.5, 'runs/a')
    """
    if is_loggable(value):
        return value
    text = str(value)
    text = text if is_utf8(text) else text.encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 200 else text[:197] + "..."
