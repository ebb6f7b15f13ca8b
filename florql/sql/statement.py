"""Parsing one SQL statement with sqlglot (dialect duckdb), with errors a user can act on.

The query text DuckDB runs is always the user's original text: sqlglot's tree is used to analyse
and to refuse, never regenerated into SQL (its rewrites, like `range` -> `generate_series`, are
not always exact in the duckdb dialect).

>>> parse_statement("SELECT loss FROM logs").sql()
'SELECT loss FROM logs'
>>> parse_statement("SELECT 1; SELECT 2")
Traceback (most recent call last):
...
florql_storage.errors.QueryError: only one SQL statement per query is allowed; run them one at a time
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from florql.errors import QueryError

DIALECT = "duckdb"


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    # sqlglot logs a warning when it falls back to an opaque Command (LOAD, CALL, EXPLAIN...);
    # we refuse those statements ourselves, so the warning would only be noise on stderr.
    logger = logging.getLogger("sqlglot")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def parse_statement(sql: str) -> exp.Expr:
    """Parse exactly one statement.

    Raises:
        QueryError: empty text, several statements, or a syntax error (with line and column).
    """
    if not sql or not sql.strip():
        raise QueryError("the query is empty; give one SELECT statement")
    try:
        with _quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as e:
        raise QueryError(_syntax_message(e) + _pivot_hint(sql)) from None
    except TokenError as e:
        raise QueryError(f"syntax error: {e} (an unterminated quote or comment?)") from None
    if not statements:
        raise QueryError("the query is empty; give one SELECT statement")
    if len(statements) > 1:
        raise QueryError("only one SQL statement per query is allowed; run them one at a time")
    return statements[0]


def _pivot_hint(sql: str) -> str:
    """sqlglot reads no ORDER BY/LIMIT after a bare PIVOT; a subquery around it does."""
    first = sql.lstrip(" \t\r\n(").split(None, 1)
    if first and first[0].upper() in ("PIVOT", "UNPIVOT"):
        return f" (to sort or limit a {first[0].upper()}, wrap it: SELECT * FROM ({first[0].upper()} ...) ORDER BY ...)"
    return ""


def _syntax_message(e: ParseError) -> str:
    if not e.errors:
        return f"syntax error: {e}"
    first = e.errors[0]
    near = (first.get("highlight") or "").strip()
    where = f"line {first.get('line')}, column {first.get('col')}"
    what = first.get("description") or "invalid syntax"
    # sqlglot names the offending token by its repr ("<Token token_type: ...>"): keep its text.
    what = re.sub(r"<Token token_type: [^>]*?text: (.*?), line: [^>]*>", r"'\1'", what)
    what = re.sub(
        r"Required keyword: '\w+' missing for <class '[\w.]*?(\w+)'>",
        lambda m: f"the {m.group(1).upper()} clause is incomplete",
        what,
    )
    near_text = f" near '{near}'" if near else ""
    return f"syntax error at {where}{near_text}: {what}"
