"""Which runs and loop iterations a query can select: the replay planner's question.

A `Selection` is built from the WHERE predicates a query imposes on `run_id` and loop columns
(`florql/sql/analysis.py`, `predicate.py`). `admits(run_id, ctx_values)` answers conservatively: it returns False only when
the predicate is certainly false for every row with that run id and those loop values, and True
whenever it cannot tell (a column it was not given, a predicate on a logged value, a subquery).
Internally each node evaluates to True, False or None (unknown), with SQL's three-valued AND, OR
and NOT; SQL NULL is treated as unknown, which only ever admits more.

>>> s = And([Compare("epoch", ">", 5), InList("run_id", ["a", "b"])])
>>> s.admits("a", {"epoch": 6}), s.admits("a", {"epoch": 5}), s.admits("c", {"epoch": 9})
(True, False, False)
>>> s.admits("a", {})          # no epoch given: cannot tell
True
>>> Not(Compare("epoch", ">", 5)).admits("a", {"epoch": 7})
False
>>> s.describe()
"epoch > 5 AND run_id IN ('a', 'b')"
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Truth = bool | None

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Selection:
    """A predicate over (run_id, loop values); subclasses implement `evaluate` and `describe`."""

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def admits(self, run_id: str, ctx_values: Mapping[str, Any]) -> bool:
        """False only when no row of `run_id` with `ctx_values` can be selected."""
        return self.evaluate(run_id, ctx_values) is not False

    @property
    def columns(self) -> set[str]:
        """The columns (`run_id` and loop names) this selection looks at."""
        return set()

    def __repr__(self) -> str:
        return f"Selection({self.describe()})"


class Always(Selection):
    """Every row may be selected (no usable predicate)."""

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        return True

    def describe(self) -> str:
        return "all rows"


class Never(Selection):
    """No row of logs or records is read (e.g. a query over `runs` only)."""

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        return False

    def describe(self) -> str:
        return "no rows"


class Unknown(Selection):
    """A predicate the analysis cannot evaluate; it admits everything, even under NOT."""

    def __init__(self, text: str = "?") -> None:
        self.text = text

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        return None

    def describe(self) -> str:
        return self.text


def _lookup(column: str, run_id: str, ctx_values: Mapping[str, Any]) -> tuple[bool, Any]:
    if column == "run_id":
        return True, run_id
    if column in ctx_values:
        return True, ctx_values[column]
    return False, None


def _comparable(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numeric) and isinstance(b, numeric)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def _literal(value: Any) -> str:
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else repr(value)


class Compare(Selection):
    """`column OP literal` with OP in =, <>, <, <=, >, >=."""

    def __init__(self, column: str, op: str, value: Any) -> None:
        if op not in _OPS:
            raise ValueError(f"unsupported comparison {op!r}")
        self.column, self.op, self.value = column, op, value

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        known, actual = _lookup(self.column, run_id, ctx_values)
        if not known or actual is None or not _comparable(actual, self.value):
            return None
        return _OPS[self.op](actual, self.value)

    def describe(self) -> str:
        return f"{self.column} {self.op} {_literal(self.value)}"

    @property
    def columns(self) -> set[str]:
        return {self.column}


class InList(Selection):
    """`column IN (literal, ...)`."""

    def __init__(self, column: str, values: Sequence[Any]) -> None:
        self.column, self.values = column, list(values)

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        known, actual = _lookup(self.column, run_id, ctx_values)
        if not known or actual is None:
            return None
        if any(_comparable(actual, v) and actual == v for v in self.values):
            return True
        if all(_comparable(actual, v) for v in self.values):
            return False
        return None

    def describe(self) -> str:
        return f"{self.column} IN ({', '.join(_literal(v) for v in self.values)})"

    @property
    def columns(self) -> set[str]:
        return {self.column}


class And(Selection):
    def __init__(self, parts: Sequence[Selection]) -> None:
        self.parts = list(parts)

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        results = [p.evaluate(run_id, ctx_values) for p in self.parts]
        if any(r is False for r in results):
            return False
        return None if any(r is None for r in results) else True

    def describe(self) -> str:
        if not self.parts:
            return "all rows"
        return " AND ".join(_wrap(p, Or) for p in self.parts)

    @property
    def columns(self) -> set[str]:
        return set().union(*(p.columns for p in self.parts))


class Or(Selection):
    def __init__(self, parts: Sequence[Selection]) -> None:
        self.parts = list(parts)

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        results = [p.evaluate(run_id, ctx_values) for p in self.parts]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False

    def describe(self) -> str:
        if not self.parts:
            return "no rows"
        return " OR ".join(_wrap(p, And) for p in self.parts)

    @property
    def columns(self) -> set[str]:
        return set().union(*(p.columns for p in self.parts))


class Not(Selection):
    def __init__(self, part: Selection) -> None:
        self.part = part

    def evaluate(self, run_id: str, ctx_values: Mapping[str, Any]) -> Truth:
        result = self.part.evaluate(run_id, ctx_values)
        return None if result is None else not result

    def describe(self) -> str:
        return f"NOT ({self.part.describe()})"

    @property
    def columns(self) -> set[str]:
        return self.part.columns


def _wrap(part: Selection, other: type) -> str:
    text = part.describe()
    return f"({text})" if isinstance(part, other) and len(part.parts) > 1 else text  # type: ignore[attr-defined]


def any_of(parts: Sequence[Selection]) -> Selection:
    """The union of selections, simplified: `Always` absorbs, `Never` drops out."""
    kept = [p for p in parts if not isinstance(p, Never)]
    if any(isinstance(p, Always) for p in kept):
        return Always()
    if not kept:
        return Never()
    return kept[0] if len(kept) == 1 else Or(kept)


def all_of(parts: Sequence[Selection]) -> Selection:
    """The intersection of selections, simplified: `Always` and unknowns drop out."""
    kept = [p for p in parts if not isinstance(p, (Always, Unknown))]
    if any(isinstance(p, Never) for p in kept):
        return Never()
    if not kept:
        return Always()
    return kept[0] if len(kept) == 1 else And(kept)
