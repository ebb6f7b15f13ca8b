"""Storage benchmark: the log manager, checkpoint pages, dedup and open/recovery time.

    .venv/bin/python bench/bench_storage.py [--quick] [--big] [--dir /tmp/florql-bench-storage]

Each section prints a table with its baseline measured in the same run:

1. small logical records: group commit (flush every 1000 records) vs one fsync per record;
2. checkpoint pages: `write_checkpoint` of incompressible float32 state vs a plain sequential
   write + fsync of the same bytes (goal >= 80%), medians of alternating trials;
3. dedup: stored bytes of a second checkpoint of a model in which half the layers changed;
4. open (recovery) time for logs of 10 MB, 100 MB (and 1 GB with --big): with index
   checkpoints vs a full redo of the log (what opening costs without them), plus the worst case
   for small records (just under the index interval after the last index checkpoint).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time

import numpy as np
from florql_storage import Store, kinds
from florql_storage.manifest import Manifest, read_manifest
from florql_storage.recovery import redo
from florql_storage.state import StoreState


def fresh(base: str, name: str) -> str:
    path = os.path.join(base, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)))


def body(i: int) -> list:
    return ["run", i, "loss", 0.5 + i, [["epoch", i // 1000, i // 1000], ["step", i, i]], 1.0, ""]


def bench_records(base: str, quick: bool) -> None:
    n_group = 100_000 if quick else 500_000
    n_single = 500 if quick else 2000
    rows = []
    bodies = [body(i) for i in range(n_group)]
    store = Store.open(fresh(base, "records"))
    w = store.writer()
    t0 = time.perf_counter()
    for i, b in enumerate(bodies):
        w.append(kinds.VALUE, b)
        if i % 1000 == 999:
            w.flush()
    w.flush()
    dt = time.perf_counter() - t0
    rows.append(
        [
            "group commit (flush / 1000)",
            n_group,
            f"{dt / n_group * 1e6:.2f}",
            f"{n_group / dt:,.0f}",
        ]
    )
    t0 = time.perf_counter()
    for b in bodies[:n_group]:
        w.append(kinds.VALUE, b)
    t1 = time.perf_counter()
    rows.append(
        [
            "  append() alone (no I/O)",
            n_group,
            f"{(t1 - t0) / n_group * 1e6:.2f}",
            f"{n_group / (t1 - t0):,.0f}",
        ]
    )
    w.flush()
    buf: list = []
    t0 = time.perf_counter()
    for b in bodies:
        buf.append((kinds.VALUE, b))
    t1 = time.perf_counter()
    rows.append(
        [
            "  floor: list.append of a tuple",
            n_group,
            f"{(t1 - t0) / n_group * 1e6:.2f}",
            f"{n_group / (t1 - t0):,.0f}",
        ]
    )
    t0 = time.perf_counter()
    for b in bodies[:n_single]:
        w.append(kinds.VALUE, b)
        w.flush()
    dt = time.perf_counter() - t0
    rows.append(
        [
            "baseline: fsync per record",
            n_single,
            f"{dt / n_single * 1e6:.2f}",
            f"{n_single / dt:,.0f}",
        ]
    )
    store.close()
    table("1. small logical records", ["mode", "records", "us/record", "records/s"], rows)


def bench_checkpoint(base: str, quick: bool) -> None:
    mb = 64 if quick else 256
    trials = 3
    rng = np.random.default_rng(0)
    state = rng.standard_normal(mb * (1 << 20) // 4).astype(np.float32)
    store = Store.open(fresh(base, "ckpt"))
    w = store.writer()
    raw_path = os.path.join(base, "raw.bin")
    ours, plain = [], []
    for t in range(trials):
        state += 1.0  # new bytes every trial: nothing to dedup
        t0 = time.perf_counter()
        info = w.write_checkpoint("run", {"trial": t}, [state])
        ours.append(time.perf_counter() - t0)
        state += 1.0
        t0 = time.perf_counter()
        fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        view = memoryview(state).cast("B")
        for off in range(0, len(view), 1 << 20):
            os.write(fd, view[off : off + (1 << 20)])
        os.fsync(fd)
        os.close(fd)
        plain.append(time.perf_counter() - t0)
        os.remove(raw_path)
    nbytes = state.nbytes
    o, p = statistics.median(ours), statistics.median(plain)
    rows = [
        [
            "write_checkpoint (CRC, dedup check, pages, fsync, end record)",
            f"{nbytes / o / 1e6:,.0f}",
            f"{o * 1e3:.0f}",
        ],
        ["baseline: sequential write + fsync", f"{nbytes / p / 1e6:,.0f}", f"{p * 1e3:.0f}"],
        ["ratio", f"{p / o:.0%}", ""],
    ]
    t0 = time.perf_counter()
    _, blobs = store.load_checkpoint(info)
    lt = time.perf_counter() - t0
    rows.append(
        [
            "load_checkpoint (read + CRC into one buffer)",
            f"{nbytes / lt / 1e6:,.0f}",
            f"{lt * 1e3:.0f}",
        ]
    )
    assert len(blobs[0]) == nbytes
    store.close()
    table(
        f"2. checkpoint pages ({mb} MiB float32, median of {trials})", ["path", "MB/s", "ms"], rows
    )


def bench_dedup(base: str, quick: bool) -> None:
    rng = np.random.default_rng(1)
    layer_mb = 4 if quick else 16
    layers = [rng.standard_normal(layer_mb * (1 << 18)).astype(np.float32) for _ in range(8)]
    store = Store.open(fresh(base, "dedup"))
    w = store.writer()
    first = w.write_checkpoint("run", {"n": 1}, layers)
    for k in range(0, 8, 2):
        layers[k] = layers[k] - 0.001  # half the layers trained on, half frozen
    second = w.write_checkpoint("run", {"n": 2}, layers)
    zeros = [np.zeros(layer_mb * (1 << 18), dtype=np.float32) for _ in range(2)]
    third = w.write_checkpoint("run", {"n": 3}, zeros)
    rows = [
        [
            name,
            f"{c.raw_bytes / 1e6:.1f}",
            f"{c.stored_bytes / 1e6:.1f}",
            f"{c.stored_bytes / c.raw_bytes:.2f}",
        ]
        for name, c in [
            ("first checkpoint", first),
            ("second, half the layers changed", second),
            ("zero-filled state (lz4)", third),
        ]
    ]
    store.close()
    table("3. dedup and compression", ["checkpoint", "raw MB", "stored MB", "stored/raw"], rows)


def build_log(path: str, mbytes: int) -> None:
    """A log of about `mbytes` MB of incompressible 1 KiB records."""
    store = Store.open(path)
    w = store.writer()
    rng = np.random.default_rng(2)
    chunk = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    n = mbytes * 1000
    for i in range(n):
        off = (i * 1031) % ((1 << 20) - 1024)
        w.append(kinds.VALUE, ["run", i, "blob", chunk[off : off + 1000], [], 0.0, ""])
        if i % 2000 == 1999:
            w.flush()
    w.flush()
    store.close()


def full_redo_seconds(path: str) -> float:
    m = read_manifest(Store.open(path).fs, path)
    t0 = time.perf_counter()
    redo(
        Store.open(path).fs,
        path,
        Manifest(store_id=m.store_id, segments=m.segments, index=None),
        StoreState(),
    )
    return time.perf_counter() - t0


def bench_open(base: str, quick: bool, big: bool) -> None:
    sizes = [10, 100] + ([1000] if big else [])
    if quick:
        sizes = [10, 50]
    rows = []
    for mb in sizes:
        path = fresh(base, f"open{mb}")
        build_log(path, mb)
        log_bytes = sum(
            os.path.getsize(os.path.join(path, "log", f))
            for f in os.listdir(os.path.join(path, "log"))
        )
        opens = []
        for _ in range(3):
            t0 = time.perf_counter()
            s = Store.open(path)
            opens.append(time.perf_counter() - t0)
            s.close()
        rows.append(
            [
                f"{log_bytes / 1e6:,.0f} MB",
                f"{statistics.median(opens) * 1e3:.1f}",
                f"{full_redo_seconds(path) * 1e3:.0f}",
            ]
        )
        shutil.rmtree(path)
    # Worst case for small records: just under the record limit after the last index checkpoint.
    path = fresh(base, "open-small")
    store = Store.open(path)
    w = store.writer()
    n = store.index_records - 1
    w.append_many((kinds.VALUE, body(i)) for i in range(n))
    w.flush()
    store.close()
    t0 = time.perf_counter()
    Store.open(path).close()
    worst = time.perf_counter() - t0
    rows.append(
        [
            f"worst case: {n:,} small records after the index checkpoint",
            f"{worst * 1e3:.0f}",
            f"{full_redo_seconds(path) * 1e3:.0f}",
        ]
    )
    table(
        "4. open / recovery time", ["log", "open ms (index ckpt)", "baseline: full redo ms"], rows
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    ap.add_argument("--big", action="store_true", help="also the 1 GB open/recovery case")
    ap.add_argument("--dir", default="/tmp/florql-bench-storage")
    args, _unknown = ap.parse_known_args()
    os.makedirs(args.dir, exist_ok=True)
    print(
        f"florql storage benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs"
    )
    bench_records(args.dir, args.quick)
    bench_checkpoint(args.dir, args.quick)
    bench_dedup(args.dir, args.quick)
    bench_open(args.dir, args.quick, args.big)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
