"""Chart series are reduced in DuckDB: min and max per pixel bucket, checked against a naive
reduction in Python over the same records (an oracle)."""

from __future__ import annotations

import math

import pytest

from florql.errors import BadInputError
from florql.sql.connection import Connection
from florql.ui import series
from tests.sql.storebuild import RunLog, ctx_of, open_store


@pytest.fixture(scope="module")
def long_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run `a`: 3 epochs x 1000 steps of a noisy loss, a NaN, and an inf; run `b`: 10 values."""
    path = str(tmp_path_factory.mktemp("long") / ".florql")
    store = open_store(path)
    w = store.writer()
    log = RunLog(w, "a")
    for epoch in range(3):
        for step in range(1000):
            log.log(ctx_of(epoch=epoch, step=step), {"loss": math.sin(step * 0.37) + epoch})
        log.log(ctx_of(epoch=epoch), {"loss": float("nan"), "acc": float("inf")})
    log.end()
    log = RunLog(w, "b", t0=1_700_000_100.0)
    for step in range(10):
        log.log(ctx_of(epoch=0, step=step), {"loss": 10.0 - step})
    log.end()
    w.close()
    store.close()
    return path


def naive(values: list[float], width: int) -> set[tuple[float, float]]:
    """(x, y) of the min and max of each bucket of global steps 0..n-1."""
    n = len(values)
    buckets: dict[int, list[tuple[float, float]]] = {}
    for x, y in enumerate(values):
        b = min(math.floor(x / (n - 1) * width), width - 1)
        buckets.setdefault(b, []).append((y, x))
    out = set()
    for pts in buckets.values():
        lo, hi = min(pts), max(pts)
        out |= {(float(lo[1]), lo[0]), (float(hi[1]), hi[0])}
    return out


def test_a_long_series_becomes_min_and_max_per_bucket(long_store: str) -> None:
    with Connection(long_store, replay=False) as con:
        got = series.read_series(con, series.SeriesRequest("loss", runs=("a",), width=50))
    xs, ys = got["runs"]["a"]
    assert len(xs) <= 100
    values = [math.sin(s * 0.37) + e for e in range(3) for s in range(1000)]
    assert set(zip(map(float, xs), ys, strict=True)) == naive(values, 50)
    assert xs == sorted(xs)


def test_a_short_series_keeps_every_point_and_skips_nan_and_inf(long_store: str) -> None:
    with Connection(long_store, replay=False) as con:
        got = series.read_series(con, series.SeriesRequest("loss", runs=("b",)))
        acc = series.read_series(con, series.SeriesRequest("acc"))
    assert got["runs"]["b"] == [list(range(10)), [10.0 - s for s in range(10)]]
    assert acc["runs"] == {}


def test_global_step_does_not_restart_each_epoch(long_store: str) -> None:
    with Connection(long_store, replay=False) as con:
        got = series.read_series(con, series.SeriesRequest("loss", runs=("a",), width=4000))
    xs, _ = got["runs"]["a"]
    assert xs == list(range(3000))


def test_against_a_loop_column_each_value_is_the_mean_there(long_store: str) -> None:
    with Connection(long_store, replay=False) as con:
        got = series.read_series(con, series.SeriesRequest("loss", "epoch", ("a",), 3))
    xs, ys = got["runs"]["a"]
    assert xs == [0.0, 1.0, 2.0]
    mean = sum(math.sin(s * 0.37) for s in range(1000)) / 1000
    assert ys == pytest.approx([mean, mean + 1, mean + 2])


def test_an_unknown_x_column_names_the_choices(long_store: str) -> None:
    with Connection(long_store, replay=False) as con, pytest.raises(BadInputError) as e:
        series.read_series(con, series.SeriesRequest("loss", "batch"))
    assert "global_step, epoch, step" in str(e.value)


def test_runs_table_has_last_and_extremes_of_each_metric(ui_store: str) -> None:
    from tests.sql.conftest import loss_of

    with Connection(ui_store, replay=False) as con:
        table = series.runs_table(con, ["loss"])
    by_id = {r["run_id"]: r for r in table["runs"]}
    assert set(by_id) == {"r1", "r2"}
    m = by_id["r2"]["metrics"]["loss"]
    losses = [loss_of(1, e, s) for e in range(1, 4) for s in range(4)]
    assert m == {"last": losses[-1], "min": min(losses), "max": max(losses)}
    assert by_id["r1"]["status"] == "finished"
