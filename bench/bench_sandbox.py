"""Replay sandbox cost: file calls inside florql's replay sandbox vs the same calls outside.

    .venv/bin/python bench/bench_sandbox.py [--reps 2000] [--dir /tmp/florql-bench-sandbox]

Run on a quiet machine. Times, per call, in the same run and alternating outside/inside:

- `open` + read of a small file the replay has not written (the common read: a dataset file),
  before and after the replay's first write (the overlay then checks its scratch area);
- `os.path.exists` of a file;
- `open(..., "w")` of a small file (a write redirected to scratch);
- `torch.save` + `torch.load` of an 11 MB state (the model saved each epoch);
- the fingerprint of a folder of 10,000 files (taken twice per worker).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable

from florql.replay.fingerprint import take
from florql.replay.sandbox import Sandbox


def per_call(fn: Callable[[], object], reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def alternated(fn: Callable[[], object], reps: int, scratch: str, touch: str | None) -> tuple:
    """Median seconds per call outside and inside the sandbox, over 5 alternated rounds."""
    outside, inside = [], []
    for _ in range(5):
        outside.append(per_call(fn, reps))
        with Sandbox(scratch):
            if touch:  # the replay has written something: reads consult the scratch area
                with open(touch, "w") as f:
                    f.write("x")
            inside.append(per_call(fn, reps))
    return statistics.median(outside), statistics.median(inside)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--dir", default="/tmp/florql-bench-sandbox")
    a = ap.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    data = os.path.join(a.dir, "data")
    os.makedirs(data)
    for i in range(10_000):
        with open(os.path.join(data, f"f{i:05d}"), "wb") as f:
            f.write(b"x" * 64)
    small = os.path.join(data, "f00001")
    scratch = os.path.join(a.dir, "scratch")
    out = os.path.join(a.dir, "out.txt")

    def read() -> bytes:
        with open(small, "rb") as f:
            return f.read()

    def write() -> None:
        with open(out, "w") as f:
            f.write("x")

    rows = [
        ("open+read, nothing written yet", *alternated(read, a.reps, scratch, None)),
        ("open+read, after a write", *alternated(read, a.reps, scratch, out)),
        ("os.path.exists", *alternated(lambda: os.path.exists(small), a.reps, scratch, out)),
        ("open(w)+write", *alternated(write, a.reps, scratch, None)),
    ]
    try:
        import torch

        state = {f"w{i}": torch.randn(1024, 256) for i in range(11)}  # ~11 MB
        pt = os.path.join(a.dir, "model.pt")

        def save_load() -> object:
            torch.save(state, pt)
            return torch.load(pt)

        rows.append(("torch.save+load 11 MB", *alternated(save_load, 10, scratch, None)))
    except ImportError:
        pass
    t0 = time.perf_counter()
    n = len(take([a.dir]))
    fp = time.perf_counter() - t0
    print(f"{'call':34} {'outside':>12} {'inside':>12} {'ratio':>7}")
    for name, o, i in rows:
        print(f"{name:34} {o * 1e6:10.1f}us {i * 1e6:10.1f}us {i / o:7.2f}")
    print(f"fingerprint of {n} files: {fp * 1e3:.1f} ms")
    shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
