"""Oracle: random logs written to a real store; every query in a catalogue answers exactly what a
naive Python scan of the stored records computes (tests/sql/storebuild.naive_values)."""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from florql.sql.connection import connect
from tests.sql.storebuild import RunLog, ctx_of, naive_values, open_store

SCALE = int(os.environ.get("FLORQL_TEST_SCALE", "1"))
STEP_NAMES = ["loss", "gn", "lr_t"]

values_st = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.integers(-1000, 1000),
)


@st.composite
def runs_st(draw):
    """A list of runs; each: epochs -> (step logs, epoch logs), with gaps and repeats."""
    runs = []
    for _ in range(draw(st.integers(1, 3))):
        epochs = []
        for _ in range(draw(st.integers(1, 4))):
            steps = []
            for _ in range(draw(st.integers(0, 4))):
                names = draw(st.lists(st.sampled_from(STEP_NAMES), max_size=4))
                steps.append([(n, draw(values_st)) for n in names])
            if not runs and not epochs:  # the queries name every step name: log each once
                steps = [[(n, draw(values_st)) for n in STEP_NAMES], *steps]
            epoch_vals = [("acc", draw(values_st))] if draw(st.booleans()) else []
            epochs.append((steps, epoch_vals))
        runs.append(epochs)
    return runs


def write(path: str, runs: list) -> None:
    store = open_store(path)
    w = store.writer()
    for r, epochs in enumerate(runs):
        log = RunLog(w, f"r{r}", args={"lr": 0.1 * (r + 1)})
        for e, (steps, epoch_vals) in enumerate(epochs, start=1):
            for s, pairs in enumerate(steps):
                for name, value in pairs:  # one record each: repeats in one context happen
                    log.log(ctx_of(epoch=e, step=s), {name: value}, atomic=False)
            for name, value in epoch_vals:
                log.log(ctx_of(epoch=e), {name: value})
        log.end()
    w.close()
    store.close()


def wide(values: list[dict]) -> dict[tuple, dict]:
    """The naive `logs`: (run_id, epoch, step) -> {name: last value by LSN}."""
    rows: dict[tuple, dict] = defaultdict(dict)
    for v in sorted(values, key=lambda v: v["lsn"]):
        key = (v["run_id"], v["loops"].get("epoch"), v["loops"].get("step"))
        rows[key][v["name"]] = float(v["value"])
    return rows


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def same_rows(got: list[tuple], want: list[tuple]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(sorted(got, key=repr), sorted(want, key=repr), strict=True):
        for x, y in zip(g, w, strict=True):
            if isinstance(x, float) or isinstance(y, float):
                if not close(x, y):
                    return False
            elif x != y:
                return False
    return True


def check_catalogue(con, values: list[dict], threshold: int) -> None:
    rows = wide(values)
    # 1. filter on loop columns
    got = con.sql(
        f"SELECT run_id, epoch, step, loss FROM logs WHERE epoch > {threshold} AND loss IS NOT NULL"
    ).fetchall()
    want = [(k[0], k[1], k[2], v["loss"]) for k, v in rows.items() if k[1] is not None
            and k[1] > threshold and "loss" in v]  # fmt: skip
    assert same_rows(got, want)
    # 2. aggregates per epoch
    got = con.sql(
        "SELECT run_id, epoch, sum(gn), count(gn), count(*) FROM logs WHERE step IS NOT NULL "
        "GROUP BY run_id, epoch"
    ).fetchall()
    groups: dict[tuple, list] = defaultdict(list)
    for k, v in rows.items():
        if k[2] is not None:
            groups[(k[0], k[1])].append(v)
    want = []
    for (run, epoch), vs in groups.items():
        gns = [v["gn"] for v in vs if "gn" in v]
        want.append((run, epoch, sum(gns) if gns else None, len(gns), len(vs)))
    assert same_rows(got, want)
    # 3. a window over steps
    got = con.sql(
        "SELECT run_id, epoch, step, loss - lag(loss) OVER (PARTITION BY run_id, epoch ORDER BY step) "
        "FROM logs WHERE loss IS NOT NULL AND step IS NOT NULL"
    ).fetchall()
    want = []
    for (run, epoch), _ in groups.items():
        seq = sorted((k[2], v["loss"]) for k, v in rows.items()
                     if k[:2] == (run, epoch) and k[2] is not None and "loss" in v)  # fmt: skip
        for i, (step, loss) in enumerate(seq):
            want.append((run, epoch, step, None if i == 0 else loss - seq[i - 1][1]))
    assert same_rows(got, want)
    # 4. a join of two runs
    got = con.sql(
        "SELECT a.epoch, a.step, a.loss, b.loss FROM logs a JOIN logs b ON a.epoch = b.epoch "
        "AND a.step = b.step WHERE a.run_id = 'r0' AND b.run_id = 'r1' "
        "AND a.loss IS NOT NULL AND b.loss IS NOT NULL"
    ).fetchall()
    want = []
    for k, v in rows.items():
        other = rows.get(("r1", k[1], k[2]), {})
        if k[0] == "r0" and k[2] is not None and "loss" in v and "loss" in other:
            want.append((k[1], k[2], v["loss"], other["loss"]))
    assert same_rows(got, want)
    # 5. the records view
    got = con.sql("SELECT run_id, name, count(*), sum(value) FROM records GROUP BY ALL").fetchall()
    by: dict[tuple, list] = defaultdict(list)
    for v in values:
        by[(v["run_id"], v["name"])].append(float(v["value"]))
    want = [(r, n, len(xs), sum(xs)) for (r, n), xs in by.items()]
    assert same_rows(got, want)
    # 6. the row set of logs: one row per run and loop context with a value
    got = con.sql("SELECT run_id, epoch, step FROM logs").fetchall()
    assert sorted(got, key=repr) == sorted(rows, key=repr)


@settings(
    max_examples=25 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(runs_st(), st.integers(0, 3))
def test_catalogue_queries_match_a_naive_scan_of_the_store(runs: list, threshold: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, ".florql")
        write(path, runs)
        store = open_store(path)
        values = naive_values(store)
        store.close()
        con = connect(path, replay=False)
        try:
            check_catalogue(con, values, threshold)
        finally:
            con.close()
