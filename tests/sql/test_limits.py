"""A query is bounded: Ctrl-C stops it at once, `--timeout` and a memory limit end it with a
sentence (issue 11 item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from florql.errors import BadInputError, QueryError
from florql.sql import limits
from florql.sql.connection import connect

ENDLESS = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _florql(*args: str, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-m", "florql", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # The test runner may ignore SIGINT; a user's shell gives the command the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,  # type: ignore[arg-type]
    )


def test_ctrl_c_stops_an_endless_query_with_exit_130(standard_store: str) -> None:
    proc = _florql("query", "--store", standard_store, ENDLESS)
    time.sleep(4)  # the store is read and the query runs (DuckDB never returns on its own)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err == "florql: interrupted\n"
    assert out == ""


def test_timeout_stops_an_endless_query_with_a_sentence(standard_store: str) -> None:
    proc = _florql("query", "--store", standard_store, "--timeout", "1.5", ENDLESS)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2
    assert err == (
        "florql: error: the query ran longer than its time limit of 1.5 s and was stopped; "
        "raise --timeout, or select fewer rows\n"
    )


def test_a_stopped_query_leaves_the_connection_usable(standard_store: str) -> None:
    con = connect(standard_store, replay=False, timeout=0.5)
    try:
        with pytest.raises(QueryError, match="time limit of 0.5 s"):
            con.sql(ENDLESS).fetchall()
        assert con.sql("SELECT count(DISTINCT run_id) FROM logs").fetchall() == [(2,)]
    finally:
        con.close()


def test_memory_limit_ends_a_query_that_needs_more_with_a_sentence(standard_store: str) -> None:
    con = connect(standard_store, replay=False, memory_limit="20MB")
    try:
        assert con._duck.execute("SELECT current_setting('memory_limit')").fetchone()[0] in (
            "19.0 MiB",
            "20.0 MB",
            "19.0MiB",
            "20.0MB",
        )
        with pytest.raises(QueryError) as info:
            con.sql("SELECT list(range) FROM range(30000000)").fetchall()
        assert str(info.value) == (
            "the query needs more memory than its limit of 20MB; select fewer rows, or raise "
            "the limit (--memory-limit, e.g. 16GB)"
        )
    finally:
        con.close()


def test_default_memory_limit_is_half_of_what_this_process_may_use() -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = limits._cgroup_bytes()
    usable = min(physical, cgroup) if cgroup else physical
    assert limits.default_memory_limit() == f"{int(usable * 0.5) // 2**20}MB"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--memory-limit", "lots"], "--memory-limit 'lots' is not a size"),
        (["--memory-limit", "0GB"], "is not a size"),
        (["--timeout", "0"], "--timeout 0.0 must be a number of seconds > 0"),
        (["--timeout", "nan"], "must be a number of seconds > 0"),
    ],
)
def test_bad_limits_are_bad_input(
    standard_store: str, argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from florql import cli

    assert cli.main(["query", "--store", standard_store, *argv, "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_parse_memory_limit_refuses_units_duckdb_would_misread() -> None:
    with pytest.raises(BadInputError):
        limits.parse_memory_limit("8 parsecs")


def test_without_a_usable_cache_folder_duckdb_spills_to_a_private_temporary_one(
    standard_store: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("FLORQL_CACHE_DIR", str(blocked))  # tmp/ cannot be made under a file
    con = connect(standard_store, replay=False)
    try:
        assert con.sql("SELECT count(DISTINCT run_id) FROM logs").fetchall() == [(2,)]
        temp = con._duck.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        assert os.path.basename(temp).startswith("florql-duckdb-")
        assert os.stat(temp).st_mode & 0o077 == 0
    finally:
        con.close()
    assert not os.path.exists(temp)
