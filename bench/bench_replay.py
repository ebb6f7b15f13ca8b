"""Hindsight replay benchmark on the example workload (examples/train_cnn.py).

    .venv/bin/python bench/bench_replay.py [--epochs 12] [--samples 3072] [--width 1]
                                           [--quick] [--per-epoch-only] [--no-division]
                                           [--dir DIR]

`--width 8 --samples 6144 --per-epoch-only`: a heavier model (8x the channels) whose epochs
take seconds, like real training, for the per-epoch query only.

In one run, on private copies of one recorded store (recorded at the default checkpoint
policy):

- baseline: full re-training, i.e. recording the new version of the script from scratch (this
  is also the oracle the replayed values are compared with, exactly);
- the per-epoch hindsight query as a user types it (`florql query "SELECT epoch, weight_norm
  FROM logs"` after adding `weight_norm` after the inner loop), first with no warm replay
  server running (the query starts it: the cold case), then with it running;
- the same per-epoch replay through the API, and its marginal cost per further epoch;
- a per-step statement (`grad_norm` in the inner loop) over the last quarter, the last half
  and all of the epochs with 1 worker (cost proportional to the iterations selected), and over
  the last half with 2 workers;
- division across workers (unless --no-division): the same per-step replay of a run recorded
  with one torch thread, so that two one-thread workers fit this machine's cores;
- the fixed cost of a fresh worker: a Python process that imports torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train_cnn.py"

STEP_ANCHOR = '        florql.log("loss", loss.item())\n'
STEP_STMT = (
    '        florql.log("grad_norm", float(torch.stack([p.grad.norm() for p in '
    "model.parameters()]).norm()))\n"
)
EPOCH_ANCHOR = '    florql.log("train_loss", running / len(train_loader))\n'
EPOCH_STMT = (
    '    florql.log("weight_norm", float(torch.stack([p.detach().norm() for p in '
    "model.parameters()]).norm()))\n"
)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.pop("FLORQL_STORE", None)
    return e


def record(project: Path, store: Path, text: str, args: list[str]) -> tuple[str, float]:
    from florql_storage import Store

    (project / "train.py").write_text(text)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "florql", "record", "--store", str(store), *args, "train.py"],
        cwd=project, env=env(), check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    s = Store.open(str(store), create=False)
    try:
        run_id = max(s.runs(), key=lambda r: s.runs()[r].begin_lsn)
    finally:
        s.close()
    return run_id, seconds


def values(store: Path, run_id: str, name: str) -> dict:
    from florql_storage import Store

    s = Store.open(str(store), create=False)
    try:
        out = {}
        for rec in s.scan(kinds=[3]):
            rid, _seq, n, value, ctx, _t, _replay = rec.body
            if rid == run_id and n == name:
                out[tuple((c[0], c[1]) for c in ctx)] = value
        return out
    finally:
        s.close()


def _exact(got: dict, want: dict, oracle: dict) -> bool:
    """Every selected value is there and equal; values of iterations re-executed on the way
    (from a sparse checkpoint) may be stored too, but must equal the oracle as well."""
    return all(got.get(k) == v for k, v in want.items()) and all(
        oracle.get(k) == v for k, v in got.items()
    )


def hindsight(
    store: Path, name: str, where: str, workers: int, script: Path
) -> tuple[float, object]:
    from florql.replay import hindsight as hs
    from florql.replay.predicate import parse_where

    t0 = time.perf_counter()
    report = hs.ensure(
        str(store), [name], parse_where(where), workers=workers, progress=False, script=str(script)
    )
    return time.perf_counter() - t0, report


def cli_query(store: Path, project: Path, sql: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "florql", "query", "--store", str(store), sql],
        cwd=project, env=env(), check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t0


def texts() -> tuple[str, str]:
    v1 = EXAMPLE.read_text()
    assert STEP_ANCHOR in v1 and EPOCH_ANCHOR in v1, "examples/train_cnn.py changed its log lines"
    v2 = v1.replace(STEP_ANCHOR, STEP_ANCHOR + STEP_STMT).replace(
        EPOCH_ANCHOR, EPOCH_ANCHOR + EPOCH_STMT
    )
    return v1, v2


def recorded_pair(root: Path, args: list[str]) -> tuple[str, float, str, float, Path]:
    """Record v1 (replayed from) and v2 (the oracle, timed as re-training); the script at the
    recorded path is then v2, as after the user's edit. Returns ids, seconds and v2's path."""
    v1, v2 = texts()
    (root / "v1").mkdir(parents=True)
    (root / "v2").mkdir()
    run_id, record_s = record(root / "v1", root / "v1" / ".florql", v1, args)
    oracle_id, full_s = record(root / "v2", root / "v2" / ".florql", v2, args)
    (root / "v1" / "train.py").write_text(v2)
    return run_id, record_s, oracle_id, full_s, root / "v1" / "train.py"


def copy_store(root: Path, label: str) -> Path:
    dst = root / f"store-{label}"
    shutil.copytree(root / "v1" / ".florql", dst)
    return dst


def per_step_rows(
    root: Path,
    run_id: str,
    oracle_id: str,
    full_s: float,
    current: Path,
    cases: list[tuple[int, int]],
    label: str,
) -> list[tuple]:
    """Per-step replays of `grad_norm` for epochs >= start with w workers, per (start, w)."""
    rows = []
    oracle = values(root / "v2" / ".florql", oracle_id, "grad_norm")
    for start, w in cases:
        want = {k: v for k, v in oracle.items() if k[0][1] >= start}
        store = copy_store(root, f"step{start}-{w}")
        s, rep = hindsight(store, "grad_norm", f"epoch >= {start}", w, current)
        exact = _exact(values(store, run_id, "grad_norm"), want, oracle)
        what = f"per-step grad_norm, epochs >= {start}, {w} worker(s){label}"
        rows.append((what, s, full_s / s, rep, exact))
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--samples", type=int, default=3072)
    ap.add_argument("--quick", action="store_true", help="a small configuration (4 epochs)")
    ap.add_argument("--width", type=int, default=1, help="the example's channel multiplier")
    ap.add_argument("--no-division", action="store_true", help="skip the 1-thread recording")
    ap.add_argument("--per-epoch-only", action="store_true", help="skip the per-step rows")
    ap.add_argument("--dir", default=None)
    opts, _ = ap.parse_known_args(argv)
    if opts.quick:
        opts.epochs, opts.samples = 4, 1024
    args = ["--arg", f"epochs={opts.epochs}", "--arg", f"samples={opts.samples}"]
    if opts.width != 1:
        args += ["--arg", f"width={opts.width}"]
    root = Path(opts.dir or tempfile.mkdtemp(prefix="florql-bench-replay-"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # A private warm-server folder: the cold row must not find a server started elsewhere.
    os.environ["FLORQL_WARM_DIR"] = tempfile.mkdtemp(prefix="fwb-", dir="/tmp")
    from florql.replay import warm

    run_id, record_s, oracle_id, full_s, current = recorded_pair(root / "t", args)
    t = root / "t"
    oracle_wn = values(t / "v2" / ".florql", oracle_id, "weight_norm")
    sql = "SELECT epoch, weight_norm FROM logs WHERE weight_norm IS NOT NULL ORDER BY epoch"
    rows: list[tuple] = []
    try:
        for label in ("cold: the query starts the warm server", "warm server running"):
            store = copy_store(t, label.split(":")[0].split()[0])
            s = cli_query(store, t / "v1", sql)
            exact = values(store, run_id, "weight_norm") == oracle_wn
            rows.append((f"per-epoch query (CLI), {label}", s, full_s / s, None, exact))
        store = copy_store(t, "epoch-api")
        s, rep = hindsight(store, "weight_norm", "true", 1, current)
        exact = values(store, run_id, "weight_norm") == oracle_wn
        rows.append(("per-epoch replay (API, warm), all epochs", s, full_s / s, rep, exact))
        # Marginal cost of a per-epoch epoch: one selected epoch vs all of them.
        one_s, _ = hindsight(copy_store(t, "one-epoch"), "weight_norm", "epoch = 0", 1, current)
        all_s, _ = hindsight(copy_store(t, "all-epochs"), "weight_norm", "true", 1, current)
        marginal = max(all_s - one_s, 0.0) / max(opts.epochs - 1, 1)
        half = opts.epochs // 2
        # Proportional to the epochs selected (1 worker), then divided across 2 workers.
        cases = [(opts.epochs - opts.epochs // 4, 1), (half, 1), (0, 1), (half, 2)]
        if not opts.per_epoch_only:
            rows += per_step_rows(t, run_id, oracle_id, full_s, current, cases, "")
        division: list[tuple] = []
        if not (opts.no_division or opts.per_epoch_only):
            one = recorded_pair(root / "t1", [*args, "--arg", "threads=1"])
            division = per_step_rows(
                root / "t1", one[0], one[2], one[3], one[4], [(half, 1), (half, 2)], ", 1-thread"
            )
    finally:
        warm.stop_servers()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    startup = time.perf_counter() - t0

    print(f"workload: examples/train_cnn.py {' '.join(args)}")
    print(
        f"{'what':<58} {'seconds':>8} {'speedup':>8} {'iters':>6} {'inner':>6} {'tasks':>5} exact"
    )
    print(f"{'record v1 (the run replayed from)':<58} {record_s:8.2f}")
    print(f"{'baseline: full re-training of v2 (recorded)':<58} {full_s:8.2f} {1.0:8.1f}")
    for what, s, speed, rep, exact in rows:
        detail = (
            f"{rep.iterations:6d} {rep.inner_iterations:6d} {rep.tasks:5d}"
            if rep is not None
            else f"{'':6} {'':6} {'':5}"
        )
        print(f"{what:<58} {s:8.2f} {speed:8.1f} {detail} {'yes' if exact else 'NO'}")
    if division:
        print(f"{'baseline: full re-training of v2, 1-thread run':<58} {one[3]:8.2f} {1.0:8.1f}")
        for what, s, speed, rep, exact in division:
            print(
                f"{what:<58} {s:8.2f} {speed:8.1f} {rep.iterations:6d} "
                f"{rep.inner_iterations:6d} {rep.tasks:5d} {'yes' if exact else 'NO'}"
            )
        print(f"division: 1 worker / 2 workers = {division[0][1] / division[1][1]:.2f}x")
    print(f"{'fixed cost of a fresh worker: python -c import torch':<58} {startup:8.2f}")
    epoch_cost = full_s / opts.epochs
    print(
        f"per-epoch replay, warm, 1 worker: 1 epoch {one_s:.2f} s, all {opts.epochs} "
        f"{all_s:.2f} s; marginal {1000 * marginal:.0f} ms/epoch vs {1000 * epoch_cost:.0f} "
        f"ms/epoch trained ({epoch_cost / max(marginal, 1e-3):.0f}x; <1 ms counts as 1 ms)"
    )
    if not opts.dir:  # a folder the user named is kept for inspection
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r[4] for r in rows + division) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
