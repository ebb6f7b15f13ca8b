"""`florql query` and `florql explain` from the shell: formats, exit codes, no torch import."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from florql.cli import main
from tests.sql.storebuild import RunLog, ctx_of, open_store


def florql(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "florql", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory) -> str:
    """Values that stress the formats: NaN, infinities, text with commas and quotes, NULLs."""
    path = str(tmp_path_factory.mktemp("odd") / ".florql")
    store = open_store(path)
    w = store.writer()
    log = RunLog(w, "r1")
    log.log(ctx_of(epoch=1), {"x": float("nan"), "note": 'a, "quoted"\ntext', "ok": True})
    log.log(ctx_of(epoch=2), {"x": float("inf"), "note": None, "ok": False})
    log.log(ctx_of(epoch=3), {"x": -1.25})
    log.end()
    w.close()
    store.close()
    return path


def test_table_format_is_aligned_with_a_row_count(standard_store: str, capsys) -> None:
    sql = "SELECT run_id, epoch, acc FROM logs WHERE step IS NULL AND epoch < 3 ORDER BY 1, 2"
    assert main(["query", "--store", standard_store, sql]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run_id", "epoch", "acc"]
    assert set(out[1].replace(" ", "")) == {"-"}
    assert out[2].split() == ["r1", "1", "0.25"]
    assert out[-1] == "(4 rows)"
    assert len({line.index("epoch") if "epoch" in line else 0 for line in out[:1]}) == 1
    assert len({len(line) for line in out[1:2]}) == 1


def test_csv_and_json_are_machine_clean(odd_store: str, capsys) -> None:
    sql = "SELECT epoch, x, note, ok FROM logs ORDER BY epoch"
    assert main(["query", "--store", odd_store, "--format", "csv", sql]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        ["epoch", "x", "note", "ok"],
        ["1", "nan", 'a, "quoted"\ntext', "1.0"],
        ["2", "inf", "", "0.0"],
        ["3", "-1.25", "", ""],
    ]
    assert main(["query", "--store", odd_store, "--format", "json", sql]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == [
        {"epoch": 1, "x": None, "note": 'a, "quoted"\ntext', "ok": 1.0},
        {"epoch": 2, "x": None, "note": None, "ok": 0.0},
        {"epoch": 3, "x": -1.25, "note": None, "ok": None},
    ]


def test_bad_sql_exits_2_with_one_line_on_stderr(standard_store: str) -> None:
    done = florql("query", "--store", standard_store, "SELECT FROM WHERE logs (")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("florql: error: syntax error at line 1")


def test_forbidden_sql_exits_2(standard_store: str) -> None:
    done = florql("query", "--store", standard_store, "COPY logs TO 'x.csv'")
    assert done.returncode == 2
    assert "COPY is not allowed" in done.stderr


def test_a_missing_store_exits_2_and_creates_nothing(tmp_path) -> None:
    path = tmp_path / "nothing"
    done = florql("query", "--store", str(path), "SELECT 1")
    assert done.returncode == 2 and "no florql store" in done.stderr
    assert not path.exists()


def test_the_store_comes_from_the_environment(standard_store: str) -> None:
    done = florql("query", "--format", "csv", "SELECT count(*) AS n FROM runs",
                  env={"FLORQL_STORE": standard_store})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "n\n2\n"


def test_the_query_path_does_not_import_torch(standard_store: str) -> None:
    code = (
        "import sys, florql.sql.commands, florql.cli;"
        f"florql.cli.main(['query', '--store', {standard_store!r}, 'SELECT count(*) FROM logs']);"
        "assert 'torch' not in sys.modules, 'torch was imported';"
        "import florql; assert 'torch' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "32" in done.stdout


def test_explain_shows_views_variables_and_the_selection_per_run(standard_store: str, capsys):
    sql = "SELECT epoch, avg(loss) FROM logs WHERE run_id = 'r1' AND epoch >= 2 GROUP BY epoch"
    assert main(["explain", "--store", standard_store, sql]) == 0
    out = capsys.readouterr().out
    assert "views read: logs" in out
    assert "variables: loss (logged)" in out
    assert "selection: epoch >= 2 AND run_id = 'r1'" in out or "run_id = 'r1' AND epoch >= 2" in out
    assert "r1: 2-3 (2 of 3)" in out
    assert "r2: none (0 of 3)" in out
    assert "nothing to replay" in out


def test_explain_of_a_missing_variable_asks_the_replay_planner(standard_store: str, capsys):
    assert main(["explain", "--store", standard_store, "SELECT grad_norm FROM logs"]) == 0
    out = capsys.readouterr().out
    assert "grad_norm (not logged yet)" in out
    assert "replay:" in out
