"""SQL predicates on loop columns and `run_id`, translated into `Selection` nodes (selection.py).

One translation serves `florql replay --where PRED` (`parse_where`) and a query's WHERE and
JOIN ON clauses (`florql.sql.analysis`, through `translate`), so both select iterations the
same way. Any part that is not a comparison, IN or BETWEEN of a loop column with literals (a
function call, arithmetic, a logged value) is `Unknown`: it admits everything, which only ever
replays more.

>>> s = parse_where("epoch > 5 AND run_id IN ('a', 'b')")
>>> s.admits("a", {"epoch": 6}), s.admits("a", {"epoch": 5}), s.admits("c", {"epoch": 9})
(True, False, False)
>>> b = parse_where("epoch BETWEEN 2 AND 3 OR NOT step < 4")
>>> [e for e in range(6) if b.admits("a", {"epoch": e, "step": 0})]
[2, 3]
>>> parse_where(None).admits("x", {"epoch": 1})
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlglot import exp

from florql.errors import BadInputError
from florql.replay import selection as sel

DIALECT = "duckdb"
# Which loop column (or `run_id`) a column node stands for, or None when it is none of them.
ColumnOf = Callable[[exp.Expr], "str | None"]

_COMPARE: dict[type, str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_FLIP = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def parse_where(text: str | None) -> sel.Selection:
    """The selection `text` describes (everything when None or empty).

    Raises:
        BadInputError: `text` is not a SQL boolean expression.
    """
    if not text or not text.strip():
        return sel.Always()
    import sqlglot

    try:
        tree = sqlglot.parse_one(f"SELECT 1 WHERE {text}", dialect=DIALECT)
    except sqlglot.errors.ParseError as e:
        raise BadInputError(
            f"--where {text!r} is not a SQL predicate ({str(e).splitlines()[0]}); "
            "write e.g. --where \"epoch > 5 AND run_id = 'r1...'\""
        ) from None
    where = tree.args.get("where")
    if not isinstance(where, exp.Where):
        raise BadInputError(f"--where {text!r} is not a SQL predicate; write e.g. 'epoch > 5'")
    return translate(where.this, _by_name)


def _by_name(node: exp.Expr) -> str | None:
    """`--where` names columns bare: every column is taken for a loop column or `run_id`."""
    return node.name if isinstance(node, exp.Column) else None


def translate(node: exp.Expr, column_of: ColumnOf) -> sel.Selection:
    """The selection predicate `node` imposes; `column_of` tells which columns are loop columns.

    Anything not about those columns is `Unknown` (admits everything)."""
    if isinstance(node, exp.Paren):
        return translate(node.this, column_of)
    if isinstance(node, exp.Boolean):
        return sel.Always() if node.this else sel.Never()
    if isinstance(node, exp.And):
        return sel.And([translate(p, column_of) for p in (node.left, node.right)])
    if isinstance(node, exp.Or):
        return sel.Or([translate(p, column_of) for p in (node.left, node.right)])
    if isinstance(node, exp.Not):
        return sel.Not(translate(node.this, column_of))
    unknown = sel.Unknown(node.sql(dialect=DIALECT))
    if type(node) in _COMPARE:
        return _comparison(node, column_of) or unknown
    if isinstance(node, exp.Between):
        column = column_of(node.this)
        low, high = literal(node.args.get("low")), literal(node.args.get("high"))
        if column and low is not _NO and high is not _NO:
            return sel.And([sel.Compare(column, ">=", low), sel.Compare(column, "<=", high)])
        return unknown
    if isinstance(node, exp.In) and not node.args.get("query"):
        column = column_of(node.this)
        values = [literal(v) for v in node.expressions]
        if column and values and all(v is not _NO for v in values):
            return sel.InList(column, values)
    return unknown


def _comparison(node: exp.Expr, column_of: ColumnOf) -> sel.Selection | None:
    op = _COMPARE[type(node)]
    left, right = node.this, node.expression
    column = column_of(left)
    value = literal(right)
    if column is None or value is _NO:
        column, value, op = column_of(right), literal(left), _FLIP[op]
    if column is None or value is _NO:
        return None
    return sel.Compare(column, op, value)


NOT_LITERAL = _NO = object()


def literal(node: Any) -> Any:
    """The Python value of a SQL literal (`5`, `-2.5`, `'a'`, `CAST(5 AS INT)`), else NOT_LITERAL.

    >>> from sqlglot import parse_one
    >>> literal(parse_one("-3")), literal(parse_one("'r1'")), literal(parse_one("x")) is NOT_LITERAL
    (-3, 'r1', True)
    """
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = literal(node.this)
        return _NO if value is _NO else -value
    if isinstance(node, exp.Cast):
        return literal(node.this)
    if not isinstance(node, exp.Literal):
        return _NO
    if node.is_string:
        return node.this
    try:
        return int(node.this)
    except ValueError:
        try:
            return float(node.this)
        except ValueError:
            return _NO
