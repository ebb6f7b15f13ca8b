"""Query benchmark: florql's SQL layer over a store of N logged values vs DuckDB over Parquet.

    .venv/bin/python bench/bench_query.py [--values 10000000] [--dir /tmp/florql-bench-query]

Builds a store (several runs, loops `epoch` > `step`, five names logged per step) through the
real writer with large `append_many` batches, then times, each in the same run:

- cold: the first query of a fresh connection (reads and ingests the whole log);
- warm: the same query again (goal: well under a second), and a `records` filter;
- a pivot of five variables from `logs`;
- the incremental refresh after 1% more values are appended;
- the baseline: DuckDB over the same values written to one Parquet file (long form), the same
  filter and pivot written by hand;
- `florql query` wall time from the shell on a small store vs `python -c pass`.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time

import duckdb
import pyarrow.parquet as pq_module
from florql_storage import Store, kinds

from florql.sql.connection import connect

NAMES = ["loss", "acc", "gn", "lr_t", "m5"]
RUNS = 4
EPOCHS = 50


def build(path: str, n_values: int, run_prefix: str = "r", start_epoch: int = 0) -> int:
    """Write about n_values VALUE records (plus LOOP records); return values written."""
    store = Store.open(path, create=True)
    w = store.writer()
    steps = max(1, n_values // (RUNS * EPOCHS * len(NAMES)))
    written = 0
    for r in range(RUNS):
        run_id = f"{run_prefix}{r}"
        w.begin_run(run_id, {"run_id": run_id, "script": "/bench/train.py", "args": {"lr": 0.1 * (r + 1)},
                             "started_at": time.time(), "source_hash": "bench"})  # fmt: skip
        seq, t = 0, time.time()
        for epoch in range(start_epoch, start_epoch + EPOCHS):
            entries = []
            seq += 1
            entries.append((kinds.LOOP, [run_id, seq, "epoch", [["epoch", epoch, epoch]], t]))
            for step in range(steps):
                ctx = [["epoch", epoch, epoch], ["step", step, step]]
                seq += 1
                entries.append((kinds.LOOP, [run_id, seq, "step", ctx, t]))
                base = 1.0 / (1 + epoch * steps + step)
                for k, name in enumerate(NAMES):
                    seq += 1
                    entries.append((kinds.VALUE, [run_id, seq, name, base * (k + 1), ctx, t, ""]))
                written += len(NAMES)
            w.append_many(entries)
            w.flush()
        w.end_run(run_id, "finished", {"error": None, "ended_at": time.time(), "stats": {}})
    w.close()
    store.close()
    return written


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


FILTER_LOGS = "SELECT epoch, avg(loss) FROM logs WHERE epoch > 5 GROUP BY epoch"
FILTER_RECORDS = (
    "SELECT epoch, avg(value) FROM records WHERE name = 'loss' AND epoch > 5 GROUP BY epoch"
)
PIVOT = "SELECT run_id, epoch, step, loss, acc, gn, lr_t, m5 FROM logs WHERE step IS NOT NULL"
PQ_FILTER = "SELECT epoch, avg(value) FROM '{p}' WHERE name = 'loss' AND epoch > 5 GROUP BY epoch"
PQ_PIVOT = (
    "SELECT run_id, epoch, step, "
    + ", ".join(f"max(value) FILTER (WHERE name = '{n}') AS {n}" for n in NAMES)
    + " FROM '{p}' GROUP BY run_id, epoch, step"
)


def decode_rows(path: str, n_records: int) -> list[tuple]:
    """Storage decode alone, per record: scan_frames (baseline) vs scan_bodies (bulk path)."""
    store = Store.open(path, create=False)
    was = gc.isenabled()
    gc.disable()  # as the cache decodes
    try:
        t, _ = timed(lambda: sum(len(f) for f in store.scan_frames()), repeat=3)
        out = [("storage decode per record: scan_frames (baseline)", t / n_records, "median of 3")]
        if hasattr(store, "scan_bodies"):  # absent in code before 2026-11-22 evening
            t, _ = timed(lambda: sum(len(b) for _, _, b in store.scan_bodies()), repeat=3)
            out.append(("storage decode per record: scan_bodies", t / n_records, "median of 3"))
    finally:
        if was:
            gc.enable()
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", type=int, default=10_000_000)
    ap.add_argument("--dir", default="/tmp/florql-bench-query")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    store = os.path.join(args.dir, ".florql")
    rows = []

    t_build, n = timed(lambda: build(store, args.values))
    rows.append(("build store via writer (not a query)", t_build, f"{n:,} values"))
    print(rows[-1], flush=True)

    con = connect(store, replay=False)
    t, _ = timed(lambda: con.sql(FILTER_LOGS).fetchall())
    rows.append(
        (
            "florql cold: first query (ingest whole log)",
            t,
            f"{con.cache.decoded_records:,} records decoded",
        )
    )
    n_records = con.cache.decoded_records
    rows.append(("  the same, per record", t / n_records, "cold ingest CPU is ~all of it"))
    rows += decode_rows(store, n_records)
    t, _ = timed(lambda: con.sql(FILTER_LOGS).fetchall(), repeat=5)
    rows.append(("florql warm: logs WHERE epoch > 5, avg(loss)", t, "median of 5"))
    t, _ = timed(lambda: con.sql(FILTER_RECORDS).fetchall(), repeat=5)
    rows.append(("florql warm: records WHERE name='loss' AND epoch>5", t, "median of 5"))
    t, res = timed(lambda: con.sql(PIVOT).arrow(), repeat=3)
    rows.append(("florql warm: pivot of 5 variables (to Arrow)", t, f"{res.num_rows:,} rows"))

    # Parquet baseline: the same long-form values in one file, read by a plain DuckDB.
    pq = os.path.join(args.dir, "values.parquet")
    long_form = con._duck.sql(
        "SELECT run_id, lsn, __l0 AS epoch, __l1 AS step, name, value FROM _values"
    ).to_arrow_table()
    pq_module.write_table(long_form, pq)  # the florql connection itself cannot write files
    plain = duckdb.connect()
    t, _ = timed(lambda: plain.sql(PQ_FILTER.format(p=pq)).fetchall(), repeat=5)
    rows.append(("baseline: DuckDB over Parquet, same filter", t, "median of 5"))
    t, res = timed(lambda: plain.sql(PQ_PIVOT.format(p=pq)).arrow().read_all(), repeat=3)
    rows.append(("baseline: DuckDB over Parquet, pivot of 5", t, f"{res.num_rows:,} rows"))

    before = con.cache.decoded_records
    n_more = build(store, n // 100, run_prefix="more", start_epoch=0)
    t, _ = timed(lambda: con.sql(FILTER_LOGS).fetchall())
    rows.append(("florql: query after +1% values (incremental)", t,
                 f"{con.cache.decoded_records - before:,} records decoded for {n_more:,} values"))  # fmt: skip
    con.close()

    env = {**os.environ, "FLORQL_CACHE_DIR": os.path.join(args.dir, "cache")}
    big = [
        sys.executable,
        "-m",
        "florql",
        "query",
        "--store",
        store,
        "--format",
        "csv",
        FILTER_LOGS,
    ]
    t, _ = timed(lambda: subprocess.run(big, check=True, capture_output=True, env=env))
    rows.append(("`florql query` big store, 1st call (builds disk cache)", t, "one call"))
    t, _ = timed(lambda: subprocess.run(big, check=True, capture_output=True, env=env), repeat=3)
    rows.append(("`florql query` big store, disk cache warm", t, "median of 3"))

    small = os.path.join(args.dir, "small")
    build(small, 2000)
    cli = [sys.executable, "-m", "florql", "query", "--store", small, "SELECT count(*) FROM logs"]
    t_cli, _ = timed(
        lambda: subprocess.run(cli, check=True, capture_output=True, env=env), repeat=5
    )
    t_py, _ = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeat=5)
    rows.append(("`florql query` wall time, small store", t_cli, "median of 5"))
    rows.append(("baseline: `python -c pass`", t_py, "median of 5"))

    print(f"florql query benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs")
    width = max(len(r[0]) for r in rows)
    for name, seconds, note in rows:
        if "per record" in name:
            print(f"{name.ljust(width)}  {seconds * 1e6:10.2f} us  {note}")
        else:
            print(f"{name.ljust(width)}  {seconds * 1000:10.1f} ms  {note}")


if __name__ == "__main__":
    main()
