"""`florql replay --where PRED`: a SQL boolean predicate on loop columns and `run_id`.

Parsed with sqlglot (DuckDB dialect) and translated into the SQL layer's `Selection` nodes
(`florql.sql.selection`), so `--where` and a query's WHERE clause select iterations the same
way. Any part that is not a comparison, IN or BETWEEN of a column with literals (a function
call, arithmetic) is `Unknown`: it admits everything, which only ever replays more.

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

from typing import Any

from florql.errors import BadInputError
from florql.sql import selection as sel
from florql.sql.analysis import NOT_LITERAL as _NO
from florql.sql.analysis import literal as _literal


def parse_where(text: str | None) -> sel.Selection:
    """The selection `text` describes (everything when None or empty).

    Raises:
        BadInputError: `text` is not a SQL boolean expression.
    """
    if not text or not text.strip():
        return sel.Always()
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(f"SELECT 1 WHERE {text}", dialect="duckdb")
    except sqlglot.errors.ParseError as e:
        raise BadInputError(
            f"--where {text!r} is not a SQL predicate ({str(e).splitlines()[0]}); "
            "write e.g. --where \"epoch > 5 AND run_id = 'r1...'\""
        ) from None
    where = tree.args.get("where")
    if not isinstance(where, exp.Where):
        raise BadInputError(f"--where {text!r} is not a SQL predicate; write e.g. 'epoch > 5'")
    return _translate(where.this)


def _translate(node: Any) -> sel.Selection:
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _translate(node.this)
    if isinstance(node, exp.Boolean):
        return sel.Always() if node.this else sel.Never()
    if isinstance(node, exp.And):
        return sel.And([_translate(node.left), _translate(node.right)])
    if isinstance(node, exp.Or):
        return sel.Or([_translate(node.left), _translate(node.right)])
    if isinstance(node, exp.Not):
        return sel.Not(_translate(node.this))
    compare = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
    flip = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
    if type(node) in compare:
        op = compare[type(node)]
        if isinstance(node.this, exp.Column) and _literal(node.expression) is not _NO:
            return sel.Compare(node.this.name, op, _literal(node.expression))
        if isinstance(node.expression, exp.Column) and _literal(node.this) is not _NO:
            return sel.Compare(node.expression.name, flip[op], _literal(node.this))
    if isinstance(node, exp.Between) and isinstance(node.this, exp.Column):
        low, high = _literal(node.args.get("low")), _literal(node.args.get("high"))
        if low is not _NO and high is not _NO:
            column = node.this.name
            return sel.And([sel.Compare(column, ">=", low), sel.Compare(column, "<=", high)])
    if (
        isinstance(node, exp.In)
        and isinstance(node.this, exp.Column)
        and not node.args.get("query")
    ):
        values = [_literal(v) for v in node.expressions]
        if values and all(v is not _NO for v in values):
            return sel.InList(node.this.name, values)
    return sel.Unknown(node.sql(dialect="duckdb"))
