"""Querying while another process records: a consistent prefix, and the writer never waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from florql.sql.connection import connect
from tests.sql.storebuild import open_store

ROOT = Path(__file__).resolve().parents[2]
SCALE = int(os.environ.get("FLORQL_TEST_SCALE", "1"))

WRITER = """
import json, sys, time
from tests.sql.storebuild import RunLog, ctx_of, open_store
path, steps = sys.argv[1], int(sys.argv[2])
store = open_store(path)
w = store.writer()
log = RunLog(w, "live")
worst = 0.0
for step in range(steps):
    # one atomic frame per step: a reader sees a step whole or not at all
    log.log(ctx_of(epoch=step // 100, step=step), {"loss": step * 1.0, "gn": -step * 1.0, "lr_t": 0.1})
    t0 = time.perf_counter()
    w.flush()
    worst = max(worst, time.perf_counter() - t0)
log.end()
w.close()
print(json.dumps({"worst_flush": worst}))
"""


def test_a_query_during_recording_sees_a_consistent_growing_prefix(tmp_path) -> None:
    path = str(tmp_path / ".florql")
    open_store(path).close()
    steps = 1500 * SCALE
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, str(steps)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    con = connect(path, replay=False)
    counts, queries = [], 0
    deadline = time.monotonic() + 120
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            if con.refresh() == 0 and not con.cache.names:
                time.sleep(0.01)
                continue
            rows = con.sql(
                "SELECT count(*), count(loss), count(gn), count(lr_t), "
                "coalesce(sum(loss + gn), 0), coalesce(max(step), -1) FROM logs"
            ).fetchall()
            n, n_loss, n_gn, n_lr, balance, last = rows[0]
            assert n == n_loss == n_gn == n_lr, "a step's row is incomplete"
            assert balance == 0.0, "loss and gn of a step disagree"
            assert last == n - 1, "the prefix has a hole"
            counts.append(n)
            queries += 1
        out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
        con.close()
    assert writer.returncode == 0, err
    assert counts == sorted(counts), "counts decreased"
    assert queries >= 2, "the reader never overlapped the writer"
    assert json.loads(out)["worst_flush"] < 5.0, "a flush waited on the reader"
    final = connect(path, replay=False)
    assert final.sql("SELECT count(*), max(step) FROM logs").fetchall() == [(steps, steps - 1)]
    assert final.sql("SELECT status FROM runs").fetchall() == [("finished",)]
    final.close()
