"""DuckDB's PIVOT/UNPIVOT statements (`PIVOT logs ON epoch USING avg(loss)`): what they read.

A statement-style PIVOT makes one output column per distinct value of its ON columns, known
only once the data is read, so sqlglot cannot resolve the columns of a query over it (nor can
anything else before DuckDB runs it). A query holding one is analysed loosely instead of with
`qualify` (analysis.py):

- the variables it reads are the columns named inside each PIVOT's own clauses (ON, USING,
  GROUP BY) when it pivots `logs` directly (a name no run logged there is a hindsight
  candidate), plus every column anywhere that is a logged name;
- an unknown column elsewhere is left to DuckDB's own error (it may be a pivoted column);
- every row may be selected (the selection is Unknown, which admits everything).

The standard SQL form (`FROM logs PIVOT (avg(loss) FOR epoch IN (1, 2))`) has a fixed
output and goes through the ordinary analysis.

>>> from florql.sql.statement import parse_statement
>>> from florql.sql.catalog import Catalog
>>> cat = Catalog(names=frozenset({"loss", "acc"}), loops=("epoch",), runs=("r1",))
>>> st = parse_statement("SELECT * FROM (PIVOT logs ON epoch USING avg(grad)) ORDER BY acc")
>>> has_statement_pivot(st), sorted(pivot_names(st, cat))
(True, ['acc', 'grad'])
"""

from __future__ import annotations

from sqlglot import exp

from florql.sql.catalog import Catalog

_CLAUSES = ("expressions", "using", "group")


def statement_pivots(statement: exp.Expr) -> list[exp.Pivot]:
    """The statement-style PIVOT/UNPIVOT nodes (those with their own source)."""
    return [p for p in statement.find_all(exp.Pivot) if p.this is not None]


def has_statement_pivot(statement: exp.Expr) -> bool:
    return bool(statement_pivots(statement))


def pivot_names(statement: exp.Expr, catalog: Catalog) -> set[str]:
    """The logged names (and hindsight candidates) a query with a statement PIVOT reads."""
    logged = set(catalog.all_names())
    names: set[str] = set()
    for column in statement.find_all(exp.Column):
        var = catalog.variable_for(column.name)
        if var in logged:
            names.add(var)
    for pivot in statement_pivots(statement):
        source = pivot.this
        if not (isinstance(source, exp.Table) and source.name.lower() == "logs"):
            continue
        for column in _clause_columns(pivot):
            var = catalog.variable_for(column.name)
            if var is not None:
                names.add(var)
    return names


def _clause_columns(pivot: exp.Pivot) -> list[exp.Column]:
    out: list[exp.Column] = []
    for key in _CLAUSES:
        value = pivot.args.get(key)
        nodes = value if isinstance(value, list) else [value]
        for node in nodes:
            if isinstance(node, exp.Expr):
                out += [c for c in node.find_all(exp.Column) if _outside_subquery(c, pivot)]
    return out


def _outside_subquery(column: exp.Column, pivot: exp.Pivot) -> bool:
    node = column.parent
    while node is not None and node is not pivot:
        if isinstance(node, exp.Query):
            return False
        node = node.parent
    return True
