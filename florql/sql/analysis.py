"""What a query reads: the variables it names and the rows it can select (INTERFACES §4).

`analyze(sql, catalog)` parses the query (sqlglot, dialect duckdb), refuses anything but a
read-only query (`safety.py`), and returns an `Analysis`:

- `names`: every logged variable the query references: columns of `logs` (qualified or not,
  through CTEs and subqueries; `SELECT *` on `logs` names them all) and the names a
  `WHERE name = '...'` / `name IN (...)` filter asks for on `records` (`names_in_records`);
- `missing`: those no run logged (hindsight candidates);
- `named`: those the query spells out rather than reaching only through `SELECT *`;
- `selection`: a `Selection` (see `florql/replay/selection.py`) of the runs and loop values the query can
  select, from the WHERE and JOIN ON predicates on `run_id` and loop columns, after sqlglot
  pushed predicates down through subqueries and CTEs where that is sound.

How it resolves columns: every name that is not a column of any view is tentatively added to
`logs` (a variable not logged yet), then sqlglot's `qualify` resolves every column to its
source. A column that resolves to nothing is an error decided here, from the parsed query, not
from DuckDB's error text.

>>> from florql.sql.catalog import Catalog
>>> cat = Catalog(names=frozenset({"loss", "acc"}), loops=("epoch", "step"), runs=("r1",))
>>> a = analyze("SELECT epoch, avg(loss) FROM logs WHERE epoch > 5 GROUP BY epoch", cat)
>>> sorted(a.names), sorted(a.missing), a.selection.describe()
(['loss'], [], 'epoch > 5')
>>> a = analyze("WITH x AS (SELECT * FROM logs) SELECT grad_norm FROM x WHERE run_id = 'r1'", cat)
>>> sorted(a.names), sorted(a.missing), sorted(a.named), a.selection.admits("r2", {"epoch": 1})
(['acc', 'grad_norm', 'loss'], ['grad_norm'], ['grad_norm'], False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.merge_subqueries import merge_subqueries
from sqlglot.optimizer.normalize import normalize
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from florql.errors import QueryError
from florql.replay import selection as sel
from florql.replay.predicate import translate
from florql.sql.catalog import Catalog
from florql.sql.pivot import has_statement_pivot, pivot_names
from florql.sql.safety import check_read_only, check_text
from florql.sql.statement import DIALECT, parse_statement

_VALUE_VIEWS = ("logs", "records")


@dataclass
class Analysis:
    """The result of `analyze`; see the module docstring."""

    statement: exp.Expr
    views: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    names_in_records: set[str] = field(default_factory=set)
    selection: sel.Selection = field(default_factory=sel.Always)
    # The names the query spells out (not only through `SELECT *`): what it asks for by name.
    named: set[str] = field(default_factory=set)


def analyze(sql: str, catalog: Catalog) -> Analysis:
    """Parse, check and analyse `sql` against `catalog`.

    Raises:
        QueryError: a syntax error, a forbidden statement, or a column no view has.
    """
    check_text(sql)
    statement = parse_statement(sql)
    check_read_only(statement)
    raw_names = _raw_column_names(statement)
    if has_statement_pivot(statement):  # its output columns are known only to DuckDB
        return _pivot_analysis(statement, catalog, raw_names)
    known = {c.lower() for cols in catalog.view_columns().values() for c in cols}
    candidates = {n.lower(): n for n in raw_names if n.lower() not in known}
    qualified = _qualify(statement, catalog, set(candidates.values()))
    analysis = Analysis(statement=statement, views=_views(statement))
    scopes = traverse_scope(qualified)
    for scope in scopes:
        analysis.names |= _logs_names(scope, catalog, candidates)
        analysis.names_in_records |= _records_names(scope, catalog)
    analysis.names |= analysis.names_in_records
    if isinstance(statement, exp.Describe) and "logs" in analysis.views:
        analysis.names |= set(catalog.names)
    analysis.missing = {n for n in analysis.names if n not in catalog.names}
    spelled = {r.lower() for r in raw_names}
    analysis.named = {n for n in analysis.names if n.lower() in spelled} | analysis.names_in_records
    analysis.selection = _selection(qualified, catalog)
    return analysis


def _pivot_analysis(statement: exp.Expr, catalog: Catalog, raw_names: set[str]) -> Analysis:
    """The loose analysis of a query holding a statement-style PIVOT (see pivot.py)."""
    names = pivot_names(statement, catalog)
    spelled = {r.lower() for r in raw_names}
    return Analysis(
        statement=statement,
        views=_views(statement),
        names=names,
        missing={n for n in names if n not in catalog.names},
        named={n for n in names if n.lower() in spelled},
        selection=sel.Unknown("PIVOT"),
    )


def _raw_column_names(statement: exp.Expr) -> set[str]:
    return {c.name for c in statement.find_all(exp.Column) if not isinstance(c.this, exp.Star)}


def _views(statement: exp.Expr) -> set[str]:
    ctes = {c.alias_or_name.lower() for c in statement.find_all(exp.CTE)}
    out = set()
    for t in statement.find_all(exp.Table):
        if isinstance(t.this, exp.Identifier) and t.name.lower() not in ctes:
            out.add(t.name.lower())
    return out


def _schema(catalog: Catalog, candidates: set[str]) -> dict[str, object]:
    schema = {view: dict.fromkeys(cols, "UNKNOWN") for view, cols in catalog.view_columns().items()}
    for name in sorted(candidates):
        schema["logs"].setdefault(name, "UNKNOWN")
    return dict(schema)


def _qualify(statement: exp.Expr, catalog: Catalog, candidates: set[str]) -> exp.Expr:
    try:
        return qualify(
            statement.copy(),
            schema=_schema(catalog, candidates),
            dialect=DIALECT,
            quote_identifiers=False,
        )
    except OptimizeError as e:
        raise QueryError(_unresolved_message(str(e), catalog, _views(statement))) from None
    except SqlglotError as e:
        raise QueryError(f"cannot analyse the query: {e}") from None


def _unresolved_message(text: str, catalog: Catalog, views: set[str]) -> str:
    found = re.search(
        r"Column '([^']*)' could not be resolved(?:\. Line: (\d+), Col: (\d+))?", text
    )
    found = found or re.search(r"Unknown column: ([^\s;,]+)", text)
    if found:
        groups = found.groups() + (None, None)
        where = f" (line {groups[1]}, column {groups[2]})" if groups[1] else ""
        first = f"unknown column {groups[0]!r}{where}"
    else:
        first = text.splitlines()[0] if text else "a column could not be resolved"
    shown = {v: cols for v, cols in catalog.view_columns().items() if v in views or not views}
    listed = "; ".join(f"{v} has {', '.join(cols)}" for v, cols in shown.items())
    return f"{first}: {listed}"


def _table_view(source: Any) -> str | None:
    if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
        name = source.name.lower()
        return name if name in ("logs", "records", "runs", "checkpoints") else None
    return None


def _source_view(column: exp.Column, scope: Scope) -> str | None:
    s: Scope | None = scope
    while s is not None:
        if column.table in s.sources:
            return _table_view(s.sources[column.table])
        s = s.parent
    return None


def _logs_names(scope: Scope, catalog: Catalog, candidates: dict[str, str]) -> set[str]:
    names = set()
    for column in scope.columns:
        if isinstance(column.this, exp.Star) or _source_view(column, scope) != "logs":
            continue
        ambiguous = catalog.ambiguity(column.name)
        if ambiguous:
            raise QueryError(ambiguous)
        var = catalog.variable_for(column.name)
        if var is not None:
            names.add(candidates.get(var.lower(), var))
    return names


def _records_names(scope: Scope, catalog: Catalog) -> set[str]:
    names: set[str] = set()
    for node in scope.expression.find_all(exp.EQ, exp.In):
        column = node.this if isinstance(node, exp.In) else _column_side(node)
        if not (isinstance(column, exp.Column) and column.name.lower() == "name"):
            continue
        if _source_view(column, scope) != "records":
            continue
        if isinstance(node, exp.In):
            values = node.expressions
        else:
            values = [node.expression if node.this is column else node.this]
        names |= {v.this for v in values if isinstance(v, exp.Literal) and v.is_string}
    return names


def _column_side(node: exp.Expr) -> exp.Expr | None:
    for side in (node.this, node.expression):
        if isinstance(side, exp.Column):
            return side
    return None


# --- selection ---------------------------------------------------------------------------------


def _selection(qualified: exp.Expr, catalog: Catalog) -> sel.Selection:
    try:
        pushed = merge_subqueries(pushdown_predicates(normalize(qualified.copy())))
        scopes = traverse_scope(pushed)
    except SqlglotError:
        scopes = traverse_scope(qualified)
    per_reference: list[sel.Selection] = []
    for scope in scopes:
        for alias, source in scope.sources.items():
            view = _table_view(source)
            if view in _VALUE_VIEWS:
                conjuncts = _conjuncts_for(scope, alias, source)
                per_reference.append(
                    sel.all_of([_to_selection(c, alias, view, catalog) for c in conjuncts])
                )
    return sel.any_of(per_reference)


def _conjuncts_for(scope: Scope, alias: str, source: Any) -> list[exp.Expr]:
    select = scope.expression
    if not isinstance(select, exp.Select):
        return []
    out = list(_split_and(select.args.get("where")))
    join = source.parent if isinstance(source.parent, exp.Join) else None
    # ON restricts the joined table unless the join keeps its unmatched rows (RIGHT/FULL).
    if join is not None and join.side.upper() not in ("RIGHT", "FULL"):
        out += list(_split_and(join.args.get("on")))
    return out


def _split_and(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    if isinstance(node, exp.Where):
        return _split_and(node.this)
    if isinstance(node, exp.Paren):
        return _split_and(node.this)
    if isinstance(node, exp.And):
        return _split_and(node.left) + _split_and(node.right)
    return [node]


def _to_selection(node: exp.Expr, alias: str, view: str, catalog: Catalog) -> sel.Selection:
    """Translate one predicate; anything not about this reference's loop columns is Unknown."""
    return translate(node, lambda column: _loop_column(column, alias, view, catalog))


def _loop_column(node: Any, alias: str, view: str, catalog: Catalog) -> str | None:
    if not isinstance(node, exp.Column) or node.table != alias:
        return None
    return catalog.loop_for(node.name, view)
