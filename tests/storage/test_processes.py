"""Real processes: SIGKILL at random moments, two writers at once, a reader beside a writer."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from florql_storage import Store, kinds

from .conftest import SCALE

CHILD = str(Path(__file__).with_name("_writer_child.py"))


def spawn(
    store: str, run_id: str, n: int, per_flush: int = 10, ckpt_every: int = 0
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, CHILD, store, run_id, str(n), str(per_flush), str(ckpt_every)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def values_of(store: Store, run_id: str) -> list[int]:
    return [r.body[1] for r in store.scan(kinds=[kinds.VALUE], run_id=run_id)]


def test_sigkilled_writer_loses_nothing_it_reported_durable(tmp_path):
    # Invariant 6 with a real process and a real kill.
    root = str(tmp_path / "store")
    rng = random.Random(1234)
    trials = 4 * SCALE
    for t in range(trials):
        run_id = f"kill{t}"
        child = spawn(
            root, run_id, 10**7, per_flush=rng.choice([1, 5, 50]), ckpt_every=rng.choice([0, 97])
        )
        reported = -1
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        assert child.stdout is not None
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if line and line.split()[0].isdigit():
                reported = int(line.split()[1])
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
        for line in rest.splitlines():
            if line.split() and line.split()[0].isdigit():
                reported = int(line.split()[1])
        assert child.returncode == -signal.SIGKILL
        store = Store.open(root, create=False)
        got = values_of(store, run_id)
        assert reported >= 0, "the child never reported a flush; raise the kill delay"
        assert got[: reported + 1] == list(range(reported + 1))
        assert got == list(range(len(got)))  # nothing invented, nothing out of order
        assert store.runs()[run_id].status == "crashed"
        assert store.check() == []
        for c in store.checkpoints(run_id):
            meta, (blob,) = store.load_checkpoint(c)
            assert bytes(blob) == meta["i"].to_bytes(4, "little") * 5000
    lsns = [r.lsn for r in Store.open(root).scan()]
    assert lsns == list(range(1, len(lsns) + 1))  # Invariant 1 across all the crashed writers


def test_two_processes_write_concurrently_and_lose_nothing(tmp_path):
    # Invariant 1: LSNs unique and increasing with two writers; every record of both is kept.
    root = str(tmp_path / "store")
    Store.open(root).close()
    n = 1500 * SCALE
    children = [spawn(root, f"p{k}", n, per_flush=7, ckpt_every=400) for k in range(2)]
    for c in children:
        out, err = c.communicate(timeout=120)
        assert c.returncode == 0, err
        assert out.strip().endswith("done")
    store = Store.open(root)
    lsns = [r.lsn for r in store.scan()]
    assert lsns == list(range(1, len(lsns) + 1))
    for k in range(2):
        assert values_of(store, f"p{k}") == list(range(n))
        assert store.runs()[f"p{k}"].status == "finished"
    assert len(store.checkpoints()) == 2 * (n // 400)
    frames_by = [
        {r.body[0] for r in frame if r.kind == kinds.VALUE} for frame in store.scan_frames()
    ]
    assert any(len(s) == 1 for s in frames_by)
    assert store.check() == []


def test_reader_beside_writers_always_sees_a_consistent_prefix(tmp_path):
    root = str(tmp_path / "store")
    reader = Store.open(root)
    children = [spawn(root, f"w{k}", 800 * SCALE, per_flush=3) for k in range(2)]
    seen_growth = set()
    while any(c.poll() is None for c in children):
        last = reader.refresh()
        recs = list(reader.scan())
        assert [r.lsn for r in recs] == list(range(1, last + 1))
        for k in range(2):
            got = values_of(reader, f"w{k}")
            assert got == list(range(len(got)))  # each writer's records arrive in order, no gaps
        seen_growth.add(last)
    for c in children:
        _out, err = c.communicate()
        assert c.returncode == 0, err
    assert len(seen_growth) > 2  # the reader really read while the writers wrote
    reader.refresh()
    assert all(values_of(reader, f"w{k}") == list(range(800 * SCALE)) for k in range(2))
