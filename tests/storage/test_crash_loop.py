"""Crash loops (SQLite's habit): fail at I/O operation N for every N until the workload completes,
crash, reopen, and check that everything acknowledged is there intact and nothing is invented.

Invariant 6: nothing acknowledged as durable is lost by a crash at any instant.
"""

from __future__ import annotations

from collections import Counter

import pytest
from florql_storage import Store, StoreError, kinds
from florql_storage.fs import FaultyFS

from .conftest import SCALE, value

USER_KINDS = {kinds.RUN_BEGIN, kinds.RUN_END, kinds.VALUE, kinds.LOOP, kinds.RUN_RESUME}


class Oracle:
    """What the workload appended, and how much of it was acknowledged durable."""

    def __init__(self) -> None:
        self.appended: list[tuple[int, object]] = []
        self.acked = 0
        self.ckpts: dict[str, tuple[dict, list[bytes]]] = {}  # acknowledged checkpoints
        self.tried: list[tuple[dict, list[bytes]]] = []  # every checkpoint attempted

    def add(self, kind: int, body) -> None:
        self.appended.append((kind, body))

    def ack(self) -> None:
        self.acked = len(self.appended)


def blob(i: int) -> bytes:
    # Page 0 repeats across checkpoints (dedup), page 1 changes, page 2 compresses.
    return b"\xab" * 4096 + bytes([i % 251]) * 17 + i.to_bytes(4, "little") * 1000 + bytes(5000)


def workload(store: Store, o: Oracle, n: int) -> None:
    w = store.writer()
    meta = {"run_id": "r1", "script": "train.py"}
    o.add(kinds.RUN_BEGIN, meta)
    w.begin_run("r1", {"script": "train.py"})
    o.ack()
    for i in range(n):
        o.add(kinds.VALUE, value(i))
        w.append(kinds.VALUE, value(i))
        if i % 5 == 4:
            # An atomic group between plain records: this flush writes several frames.
            group = [(kinds.LOOP, ["r1", i, "epoch", [], float(j)]) for j in range(2)]
            for e in group:
                o.add(*e)
            w.append_many(group, atomic=True)
        if i % 3 == 2:
            w.flush()
            o.ack()
        if i % 7 == 6:
            m, blobs = {"i": i}, [blob(i), blob(i + 1)[:9000]]
            o.tried.append((m, blobs))
            info = w.write_checkpoint("r1", m, blobs)
            o.ckpts[info.ckpt_id] = (m, blobs)
            o.ack()  # write_checkpoint flushes everything appended before it
    group = [(kinds.LOOP, ["r1", 1000, "epoch", [], float(j)]) for j in range(3)]
    for e in group:
        o.add(*e)
    w.append_many(group, atomic=True)
    w.flush()
    o.ack()
    o.add(kinds.RUN_END, {"run_id": "r1", "status": "finished"})
    w.end_run("r1", "finished", {})
    o.ack()


def verify(store: Store, o: Oracle) -> None:
    got = [(r.kind, r.body) for r in store.scan() if r.kind in USER_KINDS]
    # A single writer's log is a prefix of what it appended: nothing invented, nothing reordered.
    assert got == o.appended[: len(got)]
    assert len(got) >= o.acked, f"lost acknowledged records: have {len(got)}, acked {o.acked}"
    groups = Counter(b[1] for k, b in got if k == kinds.LOOP)
    expected = Counter(b[1] for k, b in o.appended if k == kinds.LOOP)
    assert all(n == expected[g] for g, n in groups.items())  # atomic groups: all or nothing
    listed = {c.ckpt_id: c for c in store.checkpoints()}
    assert set(o.ckpts) <= set(listed)
    for c in listed.values():
        meta, blobs = store.load_checkpoint(c)
        assert (meta, [bytes(b) for b in blobs]) in o.tried
    assert store.check() == []


def still_writable(store: Store) -> None:
    w = store.writer()
    w.append(kinds.VALUE, ["after", 0])
    last = w.flush()
    w.close()
    again = Store.open(store.root, fs=store.fs)
    assert again.last_lsn == last and list(again.scan(from_lsn=last))[0].body == ["after", 0]


@pytest.mark.parametrize("mode", ["drop", "garble", "sectors", "keep"])
def test_crash_at_every_io_operation_loses_nothing_acknowledged(mode):
    n_values = 60 + 20 * (SCALE - 1)  # every fail point is replayed from scratch: O(n^2)
    options = {"segment_bytes": 4096, "page_bytes": 4096, "index_records": 25}
    fail_at = 1
    while True:
        fs = FaultyFS(fail_at=fail_at)
        o = Oracle()
        try:
            workload(Store.open("/s", fs=fs, **options), o, n_values)
            completed = True
        except (OSError, StoreError):
            completed = False
        after = fs.crash(mode, seed=fail_at)
        store = Store.open("/s", fs=after, **options)
        verify(store, o)
        still_writable(store)
        if completed:
            break
        fail_at += 1
    assert fail_at > 150  # the workload really went through many I/O operations


def test_crash_during_recovery_after_a_crash_gives_the_same_store():
    # Invariant 5 on top of invariant 6: crash mid-workload, then crash at every read of the
    # recovery that follows; recovering again always yields the same records.
    options = {"segment_bytes": 4096, "page_bytes": 4096, "index_records": 25}
    fs = FaultyFS(fail_at=80)
    o = Oracle()
    with pytest.raises((OSError, StoreError)):
        workload(Store.open("/s", fs=fs, **options), o, 40)
    crashed = fs.crash("garble", seed=7)
    reference = [tuple(r) for r in Store.open("/s", fs=crashed).scan()]
    n = 1
    while True:
        rfs = FaultyFS(crashed, fail_at=n, count_reads=True)
        try:
            Store.open("/s", fs=rfs, **options)
            break
        except OSError:
            n += 1
        assert [tuple(r) for r in Store.open("/s", fs=rfs.crash("drop")).scan()] == reference
    assert n > 3
