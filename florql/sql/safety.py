"""The first wall: refuse any statement that is not a read-only query over florql's views.

The store is the truth and queries only read it. A statement passes when it is a query
(SELECT, set operations, VALUES, PIVOT/UNPIVOT) or `DESCRIBE <view>`, every table it reads is
one of florql's views or a CTE in scope where it is read (sqlglot's scope walk, so a CTE inside
a subquery does not whitelist its name in an outer FROM), every table function is on a small
allow-list, and no function that reads files or reveals settings (`current_setting`) appears
anywhere. Everything else (INSERT, COPY, ATTACH, INSTALL, SET, PRAGMA,
CALL, `FROM 'file.csv'`, `read_parquet(...)`, ...) is refused with `QueryError` before DuckDB sees
it. The second wall is the DuckDB connection itself (external access off, configuration locked;
see `connection.py`).

>>> from florql.sql.statement import parse_statement
>>> check_read_only(parse_statement("SELECT epoch, avg(loss) FROM logs GROUP BY epoch"))
>>> check_read_only(parse_statement("COPY logs TO 'out.csv'"))
Traceback (most recent call last):
...
florql_storage.errors.QueryError: COPY is not allowed: florql queries are read-only; use `florql query --format csv` to export
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from florql.errors import QueryError

VIEWS = frozenset({"logs", "records", "runs", "checkpoints"})

# Table functions that compute rows without touching files, URLs or the catalog.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

# Scalar or table functions that read files or URLs, refused wherever they appear.
_FILE_FUNCTION_PREFIXES = ("read_", "parquet_", "sniff_", "iceberg_", "delta_", "glob")
_FILE_FUNCTIONS = frozenset(
    {"sqlite_scan", "sqlite_attach", "postgres_scan", "mysql_scan", "query", "query_table",
     "getenv", "load_aws_credentials", "from_csv_auto", "scan_arrow_ipc"}
)  # fmt: skip

# Scalar functions that reveal DuckDB's configuration (temp and home folders, ...).
_SETTING_FUNCTIONS = frozenset({"current_setting"})

_STATEMENT_NAMES = {
    exp.Insert: "INSERT",
    exp.Update: "UPDATE",
    exp.Delete: "DELETE",
    exp.Merge: "MERGE",
    exp.Create: "CREATE",
    exp.Drop: "DROP",
    exp.Alter: "ALTER",
    exp.Copy: "COPY",
    exp.Attach: "ATTACH",
    exp.Detach: "DETACH",
    exp.Install: "INSTALL",
    exp.Set: "SET",
    exp.Pragma: "PRAGMA",
    exp.Use: "USE",
    exp.Summarize: "SUMMARIZE",
    exp.Show: "SHOW",
    exp.TruncateTable: "TRUNCATE",
}


# Statements sqlglot cannot parse as anything but an error or an opaque command.
_REFUSED_KEYWORDS = frozenset(
    {"EXPORT", "IMPORT", "CALL", "LOAD", "INSTALL", "CHECKPOINT", "VACUUM", "DETACH", "ATTACH",
     "COPY", "PRAGMA", "SET", "RESET", "EXPLAIN", "BEGIN", "COMMIT", "ROLLBACK", "ANALYZE",
     "UPDATE_EXTENSIONS", "FORCE", "USE", "SUMMARIZE", "SHOW"}
)  # fmt: skip


def check_text(sql: str) -> None:
    """Refuse by its first keyword a statement sqlglot may not parse (`EXPORT DATABASE ...`).

    >>> check_text("EXPORT DATABASE 'out'")
    Traceback (most recent call last):
    ...
    florql_storage.errors.QueryError: EXPORT is not allowed: florql queries are read-only; write a SELECT over the views logs, records, runs, checkpoints
    """
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    keyword = words[0].upper().rstrip(";") if words else ""
    if keyword in _REFUSED_KEYWORDS:
        raise QueryError(_refusal_for_name(keyword))


def check_read_only(statement: exp.Expr) -> None:
    """Raise `QueryError` unless `statement` only reads florql's views.

    Raises:
        QueryError: naming the refused statement, table or function, and what to do instead.
    """
    if isinstance(statement, exp.Describe):
        _check_describe(statement)
        return
    if not isinstance(statement, (exp.Query, exp.Pivot)):  # a bare PIVOT/UNPIVOT reads too
        raise QueryError(_refusal(statement))
    for node in statement.walk():
        if isinstance(node, tuple(_STATEMENT_NAMES)):
            raise QueryError(_refusal(node))
        if isinstance(node, exp.Func):
            _check_function(node)
    _check_tables(statement)


def _refusal(node: exp.Expr) -> str:
    return _refusal_for_name(_statement_name(node))


def _refusal_for_name(name: str) -> str:
    hint = "florql queries are read-only"
    if name == "COPY":
        hint += "; use `florql query --format csv` to export"
    elif name in {"EXPLAIN", "SHOW", "SUMMARIZE"}:
        hint += "; use `florql explain` or SELECT from the views logs, records, runs, checkpoints"
    else:
        hint += "; write a SELECT over the views logs, records, runs, checkpoints"
    return f"{name} is not allowed: {hint}"


def _statement_name(node: exp.Expr) -> str:
    for cls, name in _STATEMENT_NAMES.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Command):
        return str(node.this).split()[0].upper() if str(node.this).strip() else "COMMAND"
    return type(node).__name__.upper()


def _function_name(func: exp.Expr) -> str:
    if isinstance(func, exp.Anonymous):
        return str(func.name).lower()
    if isinstance(func, exp.Func):
        return func.sql_name().lower()
    return type(func).__name__.lower()


def _is_file_function(name: str) -> bool:
    return name in _FILE_FUNCTIONS or name.startswith(_FILE_FUNCTION_PREFIXES)


def _check_function(func: exp.Func) -> None:
    name = _function_name(func)
    if _is_file_function(name):
        raise QueryError(
            f"function {name}() is not allowed: florql queries read only the store's views "
            "(logs, records, runs, checkpoints)"
        )
    if name in _SETTING_FUNCTIONS:
        raise QueryError(
            f"function {name}() is not allowed: DuckDB's settings hold private paths of this "
            "machine; florql queries read only the store's views"
        )


def _cte_references(statement: exp.Expr) -> set[int]:
    """The ids of the Table nodes that name a CTE in scope where they appear.

    A CTE is visible only in its own WITH's query (and, recursive, in itself): one defined
    inside a subquery does not make the same name readable in an outer FROM, where DuckDB would
    resolve it to a table or a file. sqlglot's scope walk knows which names each scope may
    read; a query it cannot walk proves no CTE reference, so its CTE names are refused as
    unknown tables (never let through).
    """
    try:
        scopes = traverse_scope(statement)
    except Exception:  # sqlglot's scope analysis gave up: prove nothing
        return set()
    proven: set[int] = set()
    for scope in scopes:
        ctes = {name.lower() for name in scope.cte_sources}
        for table in scope.tables:
            if not table.db and not table.args.get("catalog") and table.name.lower() in ctes:
                proven.add(id(table))
    return proven


def _check_tables(statement: exp.Expr) -> None:
    ctes = _cte_references(statement)
    for table in statement.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            name = _function_name(table.this)
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise QueryError(
                    f"table function {name}() is not allowed; only "
                    f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))} may appear in FROM"
                )
            continue
        _check_table_name(table, ctes)


def _check_table_name(table: exp.Table, ctes: set[int]) -> None:
    name = table.name.lower()
    schema = (table.db or "").lower()
    if schema and schema != "main" or table.args.get("catalog") is not None:
        raise QueryError(
            f"table {table.sql(dialect='duckdb')} is not one of florql's views; "
            "query logs, records, runs or checkpoints"
        )
    if name in VIEWS or id(table) in ctes:
        return
    raise QueryError(
        f"unknown table {table.name!r}: florql's views are logs, records, runs and checkpoints"
    )


def _check_describe(statement: exp.Describe) -> None:
    target = statement.this
    if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
        _check_table_name(target, set())
        return
    if isinstance(target, exp.Query):
        check_read_only(target)
        return
    raise QueryError("DESCRIBE is allowed only on a view or a SELECT")
