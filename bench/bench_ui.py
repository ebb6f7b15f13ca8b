"""UI benchmark: `florql ui`'s chart request over one run of N values vs the same reduction in
plain DuckDB, and the runs page's requests on a store of 100 runs.

    .venv/bin/python bench/bench_ui.py [--values 10000000] [--dir /tmp/florql-bench-ui] [--quick]

Run it on a quiet machine only (check `uptime`): on 2 shared cores the numbers mean nothing.
Times, each the median of 5 after one warm-up, in the same run:

- chart: GET /api/chart?name=loss&width=800 through the real server (uvicorn on 127.0.0.1),
  token and JSON included; the store is ingested by the warm-up request, as in a UI session;
- baseline: the same min/max-per-bucket query run by DuckDB over a Parquet file of the same
  values (florql/ui/series.py's SQL on a `records` view of the file), and DuckDB fetching
  all N points (what a chart without reduction would have to ship);
- page load with 100 runs: GET / + /api/runs?metrics=loss + /api/names.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from florql_storage import Store, kinds

from florql.ui import series

TOKEN = "bench-token"


def build(path: str, runs: int, values_per_run: int, steps: int = 1000) -> None:
    """`runs` runs of `values_per_run` values of `loss`, loops epoch > step."""
    store = Store.open(path, create=True)
    w = store.writer()
    for r in range(runs):
        run_id = f"r{r:03d}"
        w.begin_run(run_id, {"run_id": run_id, "script": "/bench/train.py", "args": {"lr": r},
                             "started_at": time.time(), "source_hash": "bench"})  # fmt: skip
        seq, t, done, epoch = 0, time.time(), 0, 0
        while done < values_per_run:
            entries = []
            for step in range(min(steps, values_per_run - done)):
                seq += 1
                ctx = [["epoch", epoch, epoch], ["step", step, step]]
                entries.append((kinds.VALUE, [run_id, seq, "loss", 1.0 / (1 + done), ctx, t, ""]))
                done += 1
            w.append_many(entries)
            epoch += 1
            if epoch % 100 == 0:
                w.flush()
        w.flush()
        w.end_run(run_id, "finished", {"error": None, "ended_at": time.time(), "stats": {}})
    w.close()
    store.close()


def serve(store: str):
    import uvicorn

    from florql.ui.server import create_app

    app = create_app(store, TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join()
        app.state.reader.close()

    return stop, f"http://127.0.0.1:{port}"


def get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"X-Florql-Token": TOKEN})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.read()


def median_of(fn, repeat: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline(n: int, folder: str) -> tuple[float, float]:
    """DuckDB over Parquet: the same reduction, and fetching every point."""
    path = os.path.join(folder, "loss.parquet")
    table = pa.table({"run_id": pa.array(["r000"] * n), "lsn": pa.array(range(n), pa.int64()),
                      "epoch": pa.array([i // 1000 for i in range(n)], pa.int64()),
                      "step": pa.array([i % 1000 for i in range(n)], pa.int64()),
                      "name": pa.array(["loss"] * n), "value": pa.array([1.0 / (1 + i) for i in range(n)])})  # fmt: skip
    pq.write_table(table, path)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW records AS SELECT * FROM read_parquet('{path}')")
    sql = series.series_sql(series.SeriesRequest("loss", width=800))
    reduced = median_of(lambda: con.sql(sql).fetchall())
    everything = median_of(
        lambda: con.sql("SELECT lsn, value FROM records WHERE name = 'loss'").fetchnumpy()
    )
    con.close()
    return reduced, everything


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", type=int, default=10_000_000)
    ap.add_argument("--dir", default="/tmp/florql-bench-ui")
    ap.add_argument("--quick", action="store_true", help="100k values (a smoke run)")
    a = ap.parse_args(argv)
    n = 100_000 if a.quick else a.values
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    print(f"load: {os.getloadavg()[0]:.2f} (run on a quiet machine)")
    big, many = os.path.join(a.dir, "big"), os.path.join(a.dir, "many")
    t0 = time.perf_counter()
    build(big, 1, n)
    build(many, 100, 1000)
    print(f"built stores in {time.perf_counter() - t0:.1f} s")
    stop, base = serve(big)
    t0 = time.perf_counter()
    get(f"{base}/api/chart?name=loss&width=800")
    first = time.perf_counter() - t0
    chart = median_of(lambda: get(f"{base}/api/chart?name=loss&width=800"))
    stop()
    reduced, everything = baseline(n, a.dir)
    stop, base = serve(many)
    page = median_of(lambda: [get(f"{base}/?token={TOKEN}"), get(f"{base}/api/runs?metrics=loss"),
                              get(f"{base}/api/names")])  # fmt: skip
    stop()
    print(f"{'measure':58} {'seconds':>9}")
    rows = [
        (f"UI chart request, {n:,} values, warm (first, with ingest: {first:.2f} s)", chart),
        ("baseline: same reduction in DuckDB over Parquet", reduced),
        (f"baseline: DuckDB fetching all {n:,} points", everything),
        ("UI page load, 100 runs (/, /api/runs, /api/names)", page),
    ]
    for label, secs in rows:
        print(f"{label:58} {secs:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
