"""Bad and forbidden SQL: each refused with QueryError and a readable message; the store's bytes
never change."""

from __future__ import annotations

import hashlib
import os

import duckdb
import pytest

from florql.errors import QueryError
from florql.sql.connection import connect

# (sql, a fragment the message must contain)
FORBIDDEN = [
    ("INSERT INTO logs VALUES (1)", "INSERT is not allowed"),
    ("UPDATE records SET value = 0", "UPDATE is not allowed"),
    ("DELETE FROM records", "DELETE is not allowed"),
    ("MERGE INTO logs USING runs ON true WHEN MATCHED THEN DELETE", "not allowed"),
    ("CREATE TABLE t AS SELECT 1", "CREATE is not allowed"),
    ("CREATE VIEW v AS SELECT 1", "CREATE is not allowed"),
    ("DROP VIEW logs", "DROP is not allowed"),
    ("ALTER VIEW logs RENAME TO x", "ALTER is not allowed"),
    ("COPY logs TO 'out.csv'", "COPY is not allowed"),
    ("COPY (SELECT * FROM logs) TO 'out.parquet' (FORMAT parquet)", "COPY is not allowed"),
    ("ATTACH 'other.db' AS other", "ATTACH is not allowed"),
    ("DETACH other", "DETACH is not allowed"),
    ("INSTALL httpfs", "INSTALL is not allowed"),
    ("LOAD httpfs", "LOAD is not allowed"),
    ("SET enable_external_access = true", "SET is not allowed"),
    ("PRAGMA enable_profiling", "PRAGMA is not allowed"),
    ("EXPORT DATABASE 'dump'", "EXPORT is not allowed"),
    ("IMPORT DATABASE 'dump'", "IMPORT is not allowed"),
    ("CALL pragma_version()", "CALL is not allowed"),
    ("EXPLAIN SELECT * FROM logs", "EXPLAIN is not allowed"),
    ("SELECT * FROM read_csv('/etc/passwd')", "function read_csv() is not allowed"),
    ("SELECT * FROM read_csv_auto('x.csv')", "function read_csv_auto() is not allowed"),
    ("SELECT * FROM read_parquet('x.parquet')", "function read_parquet() is not allowed"),
    ("SELECT * FROM read_json('x.json')", "function read_json() is not allowed"),
    ("SELECT * FROM read_json_auto('x.json')", "not allowed"),
    ("SELECT content FROM read_text('/etc/passwd')", "function read_text() is not allowed"),
    ("SELECT * FROM read_blob('/etc/passwd')", "function read_blob() is not allowed"),
    ("SELECT * FROM glob('*')", "function glob() is not allowed"),
    ("SELECT * FROM sqlite_scan('x.db', 't')", "function sqlite_scan() is not allowed"),
    ("SELECT * FROM query('SELECT 1')", "function query() is not allowed"),
    ("SELECT * FROM duckdb_settings()", "table function duckdb_settings() is not allowed"),
    ("SELECT * FROM 'data.csv'", "unknown table 'data.csv'"),
    ("SELECT * FROM _values", "unknown table '_values'"),
    ("SELECT * FROM main._runs", "unknown table '_runs'"),
    ("SELECT * FROM other.logs", "not one of florql's views"),
    ("SELECT (SELECT count(*) FROM read_csv('x')) FROM logs", "function read_csv() is not allowed"),
    (
        "WITH x AS (SELECT * FROM read_parquet('p')) SELECT * FROM x",
        "read_parquet() is not allowed",
    ),
    # A CTE is in scope only inside its own WITH's query (issue 11 item 3): one defined in a
    # subquery must not whitelist its name in an outer FROM (DuckDB reads it as a file there).
    (
        "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) a, x",
        "unknown table 'x'",
    ),
    (
        'SELECT * FROM (WITH ".tmp/creds.csv" AS (SELECT 1) SELECT * FROM ".tmp/creds.csv") a, '
        '".tmp/creds.csv"',
        "unknown table '.tmp/creds.csv'",
    ),
    (
        "SELECT (SELECT count(*) FROM (WITH _values AS (SELECT 1) SELECT 1)) FROM _values",
        "unknown table '_values'",
    ),
    (
        "SELECT * FROM logs WHERE run_id IN (WITH _runs AS (SELECT 'r1') SELECT * FROM _runs) "
        "UNION ALL SELECT * FROM logs, _runs",
        "unknown table '_runs'",
    ),
    (
        "WITH a AS (SELECT * FROM (WITH b AS (SELECT 1) SELECT 1)) SELECT * FROM b",
        "unknown table 'b'",
    ),
    ("SELECT current_setting('temp_directory')", "function current_setting() is not allowed"),
    ("SELECT current_setting('home_' || 'directory')", "current_setting() is not allowed"),
    ("SELECT * FROM (PIVOT read_csv('x') ON a USING count(*))", "read_csv() is not allowed"),
    ("SELECT * FROM (PIVOT _values ON epoch USING avg(loss))", "unknown table '_values'"),
    ("SELECT 1; DROP VIEW logs", "only one SQL statement"),
    ("SELECT 1; SELECT 2", "only one SQL statement"),
]

BAD = [
    ("SELEC loss FROM logs", "syntax error"),
    ("SELECT loss FROM logs WHERE (epoch > 1", "syntax error at line 1, column"),
    ("SELECT loss\nFROM logs\nWHERE epoch >", "line 3"),
    ("SELECT 'unterminated FROM logs", "syntax error"),
    ("", "the query is empty"),
    ("   ;  ", "the query is empty"),
    ("SELECT nope FROM runs", "unknown column 'nope' (line 1, column"),
    ("SELECT r.nope FROM runs r", "unknown column 'nope'"),
    ("SELECT lossy FROM logs", "did you mean `loss`"),
    ("SELECT value FROM records WHERE name = 'acc_'", "did you mean `acc`"),
    ("SELECT avg(loss) FROM logs WHERE epoch = 'x' GROUP BY nonsense_col", "nonsense_col"),
    ("SELECT loss + phase FROM logs", "DuckDB could not run the query"),
]


def _snapshot(root: str) -> dict[str, str]:
    out = {}
    for folder, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def con(standard_store: str):
    c = connect(standard_store, replay=False)
    yield c
    c.close()


@pytest.mark.parametrize(("sql", "fragment"), FORBIDDEN)
def test_forbidden_statement_is_refused_with_query_error(con, sql: str, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        con.sql(sql).fetchall()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("sql", "fragment"), BAD)
def test_bad_sql_is_a_query_error_with_a_readable_message(con, sql: str, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        con.sql(sql).fetchall()
    assert fragment in str(info.value)
    assert "Traceback" not in str(info.value)


def test_refused_and_bad_queries_leave_the_store_byte_identical(standard_store: str) -> None:
    before = _snapshot(standard_store)
    c = connect(standard_store, replay=False)
    for sql, _ in FORBIDDEN + BAD:
        with pytest.raises(QueryError):
            c.sql(sql).fetchall()
    c.sql("SELECT count(*) FROM logs").fetchall()
    c.close()
    assert _snapshot(standard_store) == before


def test_duckdb_itself_refuses_files_and_config_changes(con) -> None:
    # The second wall: even SQL that slipped past the analysis cannot reach the file system.
    with pytest.raises(duckdb.Error, match="disabled"):
        con._duck.sql("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error, match="locked"):
        con._duck.execute("SET enable_external_access = true")


def test_the_query_path_does_not_expose_python_variables(con) -> None:
    secret = [1]  # noqa: F841  (DuckDB's replacement scans would find a local DataFrame by name)
    with pytest.raises(QueryError, match="unknown table 'secret'"):
        con.sql("SELECT * FROM secret")


# Read-only statements that must run (issue 10: PIVOT was refused as "not read-only"), each with
# an equivalent plain query as its oracle.
ALLOWED = [
    (
        "PIVOT logs ON epoch USING avg(loss) GROUP BY run_id",
        "SELECT run_id, avg(loss) FILTER (epoch = 1), avg(loss) FILTER (epoch = 2), "
        "avg(loss) FILTER (epoch = 3) FROM logs GROUP BY run_id",
    ),
    (
        "SELECT * FROM (PIVOT logs ON epoch USING avg(loss) GROUP BY run_id) ORDER BY run_id DESC",
        "SELECT run_id, avg(loss) FILTER (epoch = 1), avg(loss) FILTER (epoch = 2), "
        "avg(loss) FILTER (epoch = 3) FROM logs GROUP BY run_id ORDER BY run_id DESC",
    ),
    (
        'SELECT run_id, "2" FROM (PIVOT logs ON epoch USING max(acc) GROUP BY run_id) '
        "ORDER BY 2 DESC LIMIT 1",
        "SELECT run_id, acc FROM logs WHERE epoch = 2 AND acc IS NOT NULL ORDER BY 2 DESC LIMIT 1",
    ),
    (
        "SELECT * FROM (UNPIVOT (SELECT run_id, epoch, acc FROM logs WHERE acc IS NOT NULL) "
        "ON acc INTO NAME n VALUE v) ORDER BY v DESC, run_id",
        "SELECT run_id, epoch, 'acc', acc FROM logs WHERE acc IS NOT NULL "
        "ORDER BY acc DESC, run_id",
    ),
    (
        "SELECT * FROM (SELECT run_id, epoch, acc FROM logs WHERE acc IS NOT NULL) "
        "PIVOT (max(acc) FOR epoch IN (1, 3)) ORDER BY run_id",
        "SELECT run_id, max(acc) FILTER (epoch = 1), max(acc) FILTER (epoch = 3) FROM logs "
        "GROUP BY run_id ORDER BY run_id",
    ),
    (
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) "
        "SELECT (SELECT sum(n) FROM t), (WITH u AS (SELECT 2 AS m) SELECT m FROM u)",
        "SELECT 6, 2",
    ),
]


@pytest.mark.parametrize(("sql", "oracle"), ALLOWED)
def test_read_only_statements_run_and_equal_their_plain_form(con, sql: str, oracle: str) -> None:
    got = con.sql(sql).fetchall()
    want = con.sql(oracle).fetchall()
    if "ORDER BY" not in sql:
        got, want = sorted(got), sorted(want)
    assert got == want and got


def test_a_sort_after_a_bare_pivot_is_told_to_wrap_it(con) -> None:
    with pytest.raises(QueryError, match=r"wrap it: SELECT \* FROM \(PIVOT \.\.\.\) ORDER BY"):
        con.sql("PIVOT logs ON epoch USING avg(loss) GROUP BY run_id ORDER BY run_id")


def test_duckdb_temp_folder_is_florql_private_one_not_the_working_folder(
    standard_store: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from florql.sql import persist

    # The attack of issue 11 item 3: a file under the working folder's `.tmp`, which DuckDB's
    # default temp folder for an in-memory database made readable past external access off.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "creds.csv").write_text("user,password\nalice,hunter2\n")
    c = connect(standard_store, replay=False)
    try:
        c.sql("SELECT count(*) FROM logs").fetchall()
        setting = c._duck.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        assert setting == persist.temp_dir()
        assert os.stat(setting).st_mode & 0o077 == 0
        with pytest.raises(duckdb.Error, match="disabled"):
            c._duck.sql("SELECT * FROM '.tmp/creds.csv'").fetchall()
    finally:
        c.close()
