"""Syntax errors read as one plain sentence with line and column, not parser internals."""

from __future__ import annotations

import pytest

from florql.errors import QueryError
from florql.sql.statement import parse_statement


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "select from where",
            "syntax error at line 1, column 17 near 'where': Expected table name but got 'where'",
        ),
        (
            "select * from logs where",
            "syntax error at line 1, column 24 near 'where': the WHERE clause is incomplete",
        ),
        (
            "select 1\nfrom logs\nwhere (epoch",
            "syntax error at line 3, column 12 near 'epoch': Expecting )",
        ),
    ],
)
def test_syntax_error_names_line_column_and_what_is_wrong(sql: str, message: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_statement(sql)
    assert str(e.value) == message
    assert "<" not in str(e.value)  # no reprs of sqlglot objects
