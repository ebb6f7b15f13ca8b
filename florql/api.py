"""The training-script API: `log`, `arg`, `args`, `loop`, `checkpointing` (DESIGN.md §3).

Each call goes to the current session (`florql.session`); the first call starts one when none
is running (plain `python train.py` records too, into `$FLORQL_STORE` or `./.florql`). Importing
this module imports neither torch nor the storage engine.

With the environment variable `FLORQL_DISABLE=1` every call passes its value through and nothing
is recorded (the baseline of the overhead benchmark).

>>> import os; os.environ["FLORQL_DISABLE"] = "1"
>>> log("x", 1.5), arg("lr", 0.1), list(loop("epoch", range(2)))
(1.5, 0.1, [0, 1])
>>> del os.environ["FLORQL_DISABLE"]; from florql import session; session.reset()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from florql import session as _session

T = TypeVar("T")


def log(name: str, value: T) -> T:
    """Record `value` under `name` in the current loop context and return it unchanged.

    Raises TypeError (naming `name`) for values florql cannot store; see `florql.values`.
    """
    s = _session.CURRENT
    if s is None:
        s = _session.current()
    return s.log(name, value)


def arg(name: str, default: T) -> T:
    """A run parameter: `default`, unless `florql record --arg name=VALUE` overrides it.

    The override is cast to the type of `default` (bools from true/false/1/0).
    """
    return _session.current().arg(name, default)


def args(values: T) -> T:
    """Record settings as the run's args and return `values` unchanged.

    `values` is an argparse Namespace (e.g. `florql.args(parser.parse_args())`) or a dict. Under
    `florql record` argparse namespaces are recorded without this call; under plain `python`
    it is how they get in. They show in `runs.args` and as `logs` columns like `florql.arg`
    values (a value florql.log could not store is recorded as its str()).

    Raises TypeError for anything else, and for names that are not str.
    """
    from florql.parsed_args import as_dict

    _session.current().record_args(as_dict(values))
    return values


def loop(name: str, iterable: Iterable[T]) -> Iterator[T]:
    """Yield the items of `iterable` unchanged, recording the loop context of what is logged."""
    return _session.current().loop(name, iterable)


class Registration:
    """What `checkpointing(...)` returns: usable as a context manager (FlorDB's form).

    The objects are registered when `checkpointing` is called, so `with
    florql.checkpointing(model=m):` registers them on entry. Leaving the block keeps them
    registered: a replay restores checkpoints into them and code after the block (an evaluation
    after the loop) may read them, so dropping them at exit could only make replay less exact.
    Exceptions raised in the block propagate unchanged.

    >>> import os; os.environ["FLORQL_DISABLE"] = "1"
    >>> with checkpointing(w=[1.0]) as reg:
    ...     sorted(reg.names)
    ['w']
    >>> del os.environ["FLORQL_DISABLE"]; from florql import session; session.reset()
    """

    __slots__ = ("names",)

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        return None  # keep the registration; never swallow the block's exception


def checkpointing(**objects: Any) -> Registration:
    """Register objects (with state_dict()/load_state_dict(), or tensors) for checkpoints.

    A plain call registers them for the rest of the run; `with checkpointing(...):` registers
    them on entry and keeps them registered after the block (see `Registration`).
    Raises RecordError for an object florql cannot checkpoint.
    """
    _session.current().register(objects)
    return Registration(tuple(objects))


def _replay_rest_unneeded() -> bool:
    """True when a replay may skip the rest of this iteration (see florql/replay/early_exit.py).

    Spliced into replayed code only; always False while recording.
    """
    s = _session.CURRENT
    return s is not None and s.rest_of_iteration_unneeded()
