"""The Python API, shaped like DuckDB's: connect().sql() -> relation with df/arrow/fetchall/show."""

from __future__ import annotations

import pyarrow as pa
import pytest

import florql
import florql.sql.connection as connection
from florql.errors import QueryError


def test_connect_sql_returns_a_relation_with_duckdb_verbs(standard_store: str, capsys) -> None:
    con = florql.connect(standard_store)
    rel = con.sql(
        "SELECT epoch, count(loss) AS n FROM logs WHERE run_id = 'r1' GROUP BY epoch ORDER BY epoch"
    )
    assert rel.columns == ["epoch", "n"]
    assert rel.fetchall() == [(1, 4), (2, 4), (3, 4), (None, 0)]
    table = rel.arrow()
    assert isinstance(table, pa.Table) and table.column("n").to_pylist() == [4, 4, 4, 0]
    frame = rel.df()
    assert list(frame["n"]) == [4, 4, 4, 0]
    rel.show()
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["epoch", "n"] and out.endswith("(4 rows)\n")
    con.close()


def test_florql_sql_uses_the_default_store(standard_store: str, monkeypatch) -> None:
    monkeypatch.setenv("FLORQL_STORE", standard_store)
    monkeypatch.setattr(connection, "_default", None)
    # `florql.sql` is the function before the subpackage is imported and the (callable)
    # subpackage after: both answer the query on the default connection.
    assert florql.sql("SELECT count(*) FROM runs").fetchall() == [(2,)]
    import florql.sql as subpackage

    assert subpackage("SELECT count(*) FROM logs").fetchall() == [(32,)]
    connection._default.close()
    monkeypatch.setattr(connection, "_default", None)


def test_a_relation_is_lazy_and_errors_are_query_errors(standard_store: str) -> None:
    con = connection.connect(standard_store, replay=False)
    rel = con.sql("SELECT CAST(phase AS INTEGER) FROM logs WHERE phase IS NOT NULL")
    with pytest.raises(QueryError, match="DuckDB could not run the query: Conversion Error"):
        rel.fetchall()
    con.close()
