"""Hindsight replay benchmark on the example workload (examples/train_cnn.py).

    .venv/bin/python bench/bench_replay.py [--epochs 12] [--samples 3072] [--quick] [--dir DIR]

In one run, on private copies of one recorded store:

- baseline: full re-training, i.e. recording the new version of the script from scratch (this
  is also the oracle the replayed values are compared with, exactly);
- a per-epoch hindsight statement (`weight_norm` after the inner loop) for every epoch:
  restore each epoch's end-of-inner-loop checkpoint and skip the inner loop;
- a per-step statement (`grad_norm` in the inner loop) over the last half of the epochs, with
  1 and with 2 workers;
- the fixed cost in every worker: a Python process that imports torch.
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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--samples", type=int, default=3072)
    ap.add_argument("--quick", action="store_true", help="a small configuration (4 epochs)")
    ap.add_argument("--dir", default=None)
    opts, _ = ap.parse_known_args(argv)
    if opts.quick:
        opts.epochs, opts.samples = 4, 1024
    args = ["--arg", f"epochs={opts.epochs}", "--arg", f"samples={opts.samples}"]
    root = Path(opts.dir or tempfile.mkdtemp(prefix="florql-bench-replay-"))
    shutil.rmtree(root, ignore_errors=True)
    (root / "v1").mkdir(parents=True)
    (root / "v2").mkdir()
    v1 = EXAMPLE.read_text()
    assert STEP_ANCHOR in v1 and EPOCH_ANCHOR in v1, "examples/train_cnn.py changed its log lines"
    v2 = v1.replace(STEP_ANCHOR, STEP_ANCHOR + STEP_STMT).replace(
        EPOCH_ANCHOR, EPOCH_ANCHOR + EPOCH_STMT
    )
    current = root / "current" / "train.py"
    current.parent.mkdir()
    current.write_text(v2)

    run_id, record_s = record(root / "v1", root / "v1" / ".florql", v1, args)
    oracle_id, full_s = record(root / "v2", root / "v2" / ".florql", v2, args)
    stores = {}
    for label in ("epoch", "step1", "step2", "one-epoch", "all-epochs"):
        stores[label] = root / f"store-{label}"
        shutil.copytree(root / "v1" / ".florql", stores[label])

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    startup = time.perf_counter() - t0

    half = opts.epochs // 2
    where = f"epoch >= {half}"
    rows = []
    epoch_s, rep = hindsight(stores["epoch"], "weight_norm", "true", 2, current)
    exact = values(stores["epoch"], run_id, "weight_norm") == values(
        root / "v2" / ".florql", oracle_id, "weight_norm"
    )
    rows.append(
        ("per-epoch weight_norm, all epochs, 2 workers", epoch_s, full_s / epoch_s, rep, exact)
    )
    # Marginal cost of a per-epoch epoch: one worker, one selected epoch vs all of them; the
    # difference is what each further epoch adds on top of the worker's fixed start.
    one_s, _ = hindsight(stores["one-epoch"], "weight_norm", "epoch = 0", 1, current)
    all_s, _ = hindsight(stores["all-epochs"], "weight_norm", "true", 1, current)
    marginal = max(all_s - one_s, 0.0) / max(opts.epochs - 1, 1)
    oracle_all = values(root / "v2" / ".florql", oracle_id, "grad_norm")
    for w, label in ((1, "step1"), (2, "step2")):
        s, rep = hindsight(stores[label], "grad_norm", where, w, current)
        want = {
            k: v
            for k, v in values(root / "v2" / ".florql", oracle_id, "grad_norm").items()
            if k[0][1] >= half
        }
        exact = _exact(values(stores[label], run_id, "grad_norm"), want, oracle_all)
        rows.append(
            (f"per-step grad_norm, epochs >= {half}, {w} worker(s)", s, full_s / s, rep, exact)
        )

    print(
        f"workload: examples/train_cnn.py --arg epochs={opts.epochs} --arg samples={opts.samples}"
    )
    print(
        f"{'what':<48} {'seconds':>8} {'speedup':>8} {'iters':>6} {'inner':>6} {'tasks':>5} exact"
    )
    print(f"{'record v1 (the run replayed from)':<48} {record_s:8.2f}")
    print(f"{'baseline: full re-training of v2 (recorded)':<48} {full_s:8.2f} {1.0:8.1f}")
    for what, s, speed, rep, exact in rows:
        print(
            f"{what:<48} {s:8.2f} {speed:8.1f} {rep.iterations:6d} {rep.inner_iterations:6d} "  # type: ignore[attr-defined]
            f"{rep.tasks:5d} {'yes' if exact else 'NO'}"  # type: ignore[attr-defined]
        )
    print(f"{'fixed cost per worker: python -c import torch':<48} {startup:8.2f}")
    epoch_cost = full_s / opts.epochs
    print(
        f"per-epoch replay, 1 worker: 1 epoch {one_s:.2f} s, all {opts.epochs} {all_s:.2f} s; "
        f"marginal {1000 * marginal:.0f} ms/epoch vs {1000 * epoch_cost:.0f} ms/epoch trained "
        f"({epoch_cost / max(marginal, 1e-3):.0f}x; <1 ms counts as 1 ms)"
    )
    if not opts.dir:  # a folder the user named is kept for inspection
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
