"""Results that fit the ecosystem: NumPy, Polars, Parquet, CSV, HTML, `florql.dataframe`, and
`florql query --format parquet -o FILE`; each checked against the same result's Arrow table
or a naive scan of the store (the oracle)."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import florql
from florql.errors import BadInputError
from tests.replay.conftest import env
from tests.sql.conftest import loss_of

SQL = "SELECT run_id, epoch, step, loss FROM logs WHERE loss IS NOT NULL ORDER BY ALL"


@pytest.fixture
def rel(ui_store):
    con = florql.connect(ui_store, replay=False)
    yield con.sql(SQL)
    con.close()


def test_fetchnumpy_and_pl_hold_the_arrow_result(rel) -> None:
    expected = rel.arrow().to_pydict()
    arrays = rel.fetchnumpy()
    assert {k: list(v) for k, v in arrays.items()} == expected
    assert rel.pl().to_dict(as_series=False) == expected


def test_to_parquet_round_trips(rel, tmp_path) -> None:
    path = rel.to_parquet(tmp_path / "r.parquet")
    assert pq.read_table(path).equals(rel.arrow())


def test_to_csv_is_what_the_cli_prints(rel, ui_store, tmp_path) -> None:
    path = rel.to_csv(tmp_path / "r.csv")
    done = subprocess.run(
        [sys.executable, "-m", "florql", "query", "--store", ui_store, "--format", "csv", SQL],
        capture_output=True, text=True, env=env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(path, encoding="utf-8", newline="") as f:
        assert f.read() == done.stdout


def test_writing_into_a_missing_folder_is_bad_input(rel, tmp_path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        rel.to_parquet(tmp_path / "nope" / "r.parquet")


def test_repr_html_escapes_logged_strings(ui_store) -> None:
    with florql.connect(ui_store, replay=False) as con:
        html = con.sql("SELECT '<script>' AS s, 1.5 AS x")._repr_html_()
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert html.endswith("<p>1 row</p>")


def test_query_format_parquet_writes_the_file(ui_store, tmp_path) -> None:
    out = tmp_path / "q.parquet"
    args = ["query", "--store", ui_store, "--format", "parquet", "-o", str(out), SQL]
    done = subprocess.run([sys.executable, "-m", "florql", *args], capture_output=True,
                          text=True, env=env(), timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 24
    assert table.column("loss").to_pylist()[:4] == [loss_of(0, 1, s) for s in range(4)]


def test_query_format_parquet_without_a_file_is_exit_2(ui_store) -> None:
    args = ["query", "--store", ui_store, "--format", "parquet", SQL]
    done = subprocess.run([sys.executable, "-m", "florql", *args], capture_output=True,
                          text=True, env=env(), timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "add -o FILE.parquet" in done.stderr


def test_dataframe_joins_outer_values_onto_inner_rows(ui_store) -> None:
    df = florql.dataframe("loss", "acc", "final", store=ui_store)
    assert list(df.columns) == ["run_id", "epoch", "step", "loss", "acc", "final"]
    # The oracle: the standard store's formulas (tests/sql/conftest.py).
    expected = [
        (rid, e, s, loss_of(run, e, s), e * 0.25 + run * 0.1, 1.5 + run)
        for run, rid in enumerate(["r1", "r2"])
        for e in range(1, 4)
        for s in range(4)
    ]
    got = [tuple(r) for r in df.itertuples(index=False)]
    _assert_close(got, expected)


def _assert_close(got: list[tuple], expected: list[tuple]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[:3] == e[:3]
        assert g[3:] == pytest.approx(e[3:])


def test_dataframe_needs_names() -> None:
    with pytest.raises(BadInputError, match="at least one name"):
        florql.dataframe()
