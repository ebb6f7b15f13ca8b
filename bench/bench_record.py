"""Recording benchmarks, each against a baseline measured in the same run.

1. Record overhead: the example CNN recorded by `florql record` (default settings) against the
   same script with florql's calls as no-ops (`FLORQL_DISABLE=1`), alternated, medians.
2. `florql.log` per call inside a `florql.loop`, against a plain `list.append` of a tuple.
3. Checkpoint stall in the training thread against copying the same bytes into kept buffers;
   background write (`LogWriter.write_checkpoint`) against a plain sequential write + fsync of
   the same bytes; stored/raw over a whole run.

    python bench/bench_record.py [--quick] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXAMPLE = REPO / "examples" / "train_cnn.py"


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(REPO))
    e.pop("FLORQL_DISABLE", None)
    e.update(extra)
    return e


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def overhead(reps: int, script_args: list[str]) -> dict:
    """Wall (and CPU) time of whole processes: recorded vs pass-through, alternated."""
    rec, base, stats, rec_cpu, base_cpu = [], [], [], [], []
    for _ in range(reps):
        c = _cpu()
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "florql", "record", "--store", f"{d}/st", *script_args, str(EXAMPLE)],
                env=env(), check=True, capture_output=True, cwd=REPO, text=True,
            )  # fmt: skip
            rec.append(time.perf_counter() - t)
            rec_cpu.append(_cpu() - c)
            stats.append(_summary(done.stderr))
        t, c = time.perf_counter(), _cpu()
        subprocess.run(
            [sys.executable, "-m", "florql", "record", *script_args, str(EXAMPLE)],
            env=env(FLORQL_DISABLE="1"), check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        base.append(time.perf_counter() - t)
        base_cpu.append(_cpu() - c)
    r, b = statistics.median(rec), statistics.median(base)
    rc, bc = statistics.median(rec_cpu), statistics.median(base_cpu)
    return {
        "recorded": r,
        "baseline": b,
        "overhead": r / b - 1,
        "runs": stats,
        "rec": rec,
        "base": base,
        "rec_cpu": rc,
        "base_cpu": bc,
        "cpu_overhead": rc / bc - 1,
        # Each pair runs back to back, so machine-wide drift (other processes) mostly cancels.
        "pair_overhead": statistics.median(x / y - 1 for x, y in zip(rec, base, strict=True)),
    }


def _summary(stderr: str) -> dict:
    """Numbers from `florql record`'s summary line (values, checkpoints, MB, overhead %)."""
    line = [ln for ln in stderr.splitlines() if ln.startswith("florql: run ")][-1]
    m = re.search(
        r"(\d+) values, (\d+) checkpoints \(([\d.]+) MB stored of ([\d.]+) MB\), overhead ([\d.]+)%",
        line,
    )
    assert m, line
    v, c, stored, raw, ov = m.groups()
    return {
        "values": int(v),
        "checkpoints": int(c),
        "stored_bytes": float(stored) * 1e6,
        "raw_bytes": float(raw) * 1e6,
        "overhead": float(ov) / 100,
    }


def log_cost(n: int) -> dict:
    """ns per florql.log call inside a florql.loop (a float; also an int and a str, whose
    range and UTF-8 checks run at the call), vs list.append of a tuple."""
    import florql
    from florql import session

    with tempfile.TemporaryDirectory() as d:
        s = session.Session(f"{d}/st", script=str(EXAMPLE), argv=["bench"])
        s.start()
        session.install(s)
        bests = {}
        try:
            for kind, value in (("log_ns", 0.5), ("log_int_ns", 12345), ("log_str_ns", "adam")):
                best = float("inf")
                for _ in florql.loop("rep", range(5)):
                    t = time.perf_counter()
                    for _i in range(n):
                        florql.log("loss", value)
                    best = min(best, (time.perf_counter() - t) / n)
                bests[kind] = best * 1e9
        finally:
            s.end()
    lst: list = []
    base = float("inf")
    for _ in range(5):
        lst.clear()
        t = time.perf_counter()
        for i in range(n):
            lst.append(("loss", 0.5, i))
        base = min(base, (time.perf_counter() - t) / n)
    return {**bests, "append_ns": base * 1e9}


def checkpoint_costs(params_m: float) -> dict:
    """Stall and background write of a model+momentum state of ~params_m million params."""
    import torch
    from florql_storage import Store
    from torch import nn

    from florql import capture

    torch.set_num_threads(2)
    width = int((params_m * 1e6 / 8) ** 0.5)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(8)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    objects = {"model": model, "optimizer": opt}
    snap = capture.Snapshot()
    stalls = []
    for _ in range(5):
        t = time.perf_counter()
        skels, tensors = capture.state_skeletons(objects)
        capture.capture_rng()
        blobs = snap.take(tensors)
        stalls.append(time.perf_counter() - t)
    nbytes = snap.nbytes
    kept = [torch.empty_like(x) for x in tensors]
    copies = []
    for _ in range(5):  # the baseline: copy the same tensors into kept buffers, nothing else
        t = time.perf_counter()
        for dst, x in zip(kept, tensors, strict=True):
            dst.copy_(x)
        copies.append(time.perf_counter() - t)
    src = torch.randn(nbytes // 4)

    with tempfile.TemporaryDirectory(dir=str(REPO)) as d:
        store = Store.open(f"{d}/st", create=True)
        w = store.writer()
        w.begin_run("bench", {"script": "bench"})
        writes = []
        for i in range(3):
            with torch.no_grad():  # new weights and momentum each time: no page dedup
                for p in model.parameters():
                    p.add_(0.001 * (i + 1))
                    opt.state[p]["momentum_buffer"].add_(0.001 * (i + 1))
            blobs = snap.take(capture.state_skeletons(objects)[1])
            t = time.perf_counter()
            info = w.write_checkpoint("bench", {"seq": i}, blobs)
            writes.append(time.perf_counter() - t)
        w.end_run("bench", "finished", {})
        w.close()
        store.close()
        plain = []
        for i in range(3):
            buf = src.numpy().data
            t = time.perf_counter()
            with open(f"{d}/plain{i}", "wb") as f:
                f.write(buf)
                f.flush()
                os.fsync(f.fileno())
            plain.append(time.perf_counter() - t)
    return {
        "bytes": nbytes,
        "stall": statistics.median(stalls),
        "copy": statistics.median(copies),
        "write": statistics.median(writes),
        "plain_write": statistics.median(plain),
        "stored_raw": info.stored_bytes / info.raw_bytes,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="shorter runs: more pairs, less drift")
    a = ap.parse_args()
    reps = a.reps or (1 if a.quick else 3)
    script_args = ["--arg", "epochs=2", "--arg", "samples=1024"] if a.quick else []
    if a.epochs:
        script_args = ["--arg", f"epochs={a.epochs}"]

    lc = log_cost(20_000 if a.quick else 200_000)
    print("florql.log per call (inside florql.loop), best of 5")
    print(f"  {'florql.log':<28}{lc['log_ns']:8.0f} ns")
    print(f"  {'florql.log (int)':<28}{lc['log_int_ns']:8.0f} ns")
    print(f"  {'florql.log (str)':<28}{lc['log_str_ns']:8.0f} ns")
    print(f"  {'list.append(tuple) baseline':<28}{lc['append_ns']:8.0f} ns")

    ck = checkpoint_costs(2.0 if a.quick else 25.0)
    mb = ck["bytes"] / 1e6
    print(f"\ncheckpoint of {mb:.0f} MB (linear layers + SGD momentum), medians")
    print(
        f"  {'snapshot stall (training thread)':<40}{1000 * ck['stall']:8.1f} ms  {mb / ck['stall'] / 1e3:6.2f} GB/s"
    )
    print(
        f"  {'baseline: copy_ same tensors, kept bufs':<40}{1000 * ck['copy']:8.1f} ms  {mb / ck['copy'] / 1e3:6.2f} GB/s"
    )
    print(
        f"  {'background write_checkpoint (durable)':<40}{1000 * ck['write']:8.1f} ms  {mb / ck['write'] / 1e3:6.2f} GB/s"
    )
    print(
        f"  {'baseline: sequential write + fsync':<40}{1000 * ck['plain_write']:8.1f} ms  {mb / ck['plain_write'] / 1e3:6.2f} GB/s"
    )
    print(
        f"  write throughput vs baseline: {ck['plain_write'] / ck['write']:.0%}; stored/raw {ck['stored_raw']:.2f}"
    )

    ov = overhead(reps, script_args)
    print(
        f"\nrecord overhead on examples/train_cnn.py {' '.join(script_args)}: {reps} alternated reps, median wall s"
    )
    print(
        f"  {'florql record (default settings)':<40}{ov['recorded']:8.2f} s   {[round(x, 2) for x in ov['rec']]}"
    )
    print(
        f"  {'baseline: FLORQL_DISABLE=1 python':<40}{ov['baseline']:8.2f} s   {[round(x, 2) for x in ov['base']]}"
    )
    print(f"  CPU time (user+sys) median: recorded {ov['rec_cpu']:.2f} s, baseline {ov['base_cpu']:.2f} s"
          f" -> {100 * ov['cpu_overhead']:+.1f}%")  # fmt: skip
    print(f"  median of per-pair ratios: {100 * ov['pair_overhead']:+.1f}%")
    print(f"  wall overhead: {100 * ov['overhead']:+.1f}% (florql's own estimate: "
          f"{100 * statistics.median(s['overhead'] for s in ov['runs']):.1f}%)")  # fmt: skip
    st = ov["runs"][0]
    print(f"  per run: {st['values']} values, {st['checkpoints']} checkpoints, "
          f"stored/raw {st['stored_bytes'] / max(st['raw_bytes'], 1):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
