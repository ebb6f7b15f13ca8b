"""Write -> reopen -> read round trips through the whole public API."""

from __future__ import annotations

import numpy as np
from florql_storage import CheckpointInfo, Record, kinds

from .conftest import value


def test_records_read_back_in_lsn_order_after_reopen(fscase):
    store = fscase.open()
    w = store.writer()
    w.begin_run("r1", {"script": "train.py", "argv": ["train.py"]})
    for i in range(100):
        w.append(kinds.VALUE, value(i))
    last = w.flush()
    assert last == 101 == store.last_lsn
    w.close()
    store.close()

    again = fscase.open()
    recs = list(again.scan())
    assert [r.lsn for r in recs] == list(range(1, 102))  # Invariant 1: dense, increasing
    assert recs[0] == Record(
        1, kinds.RUN_BEGIN, {"script": "train.py", "argv": ["train.py"], "run_id": "r1"}
    )
    assert [r.body for r in recs[1:]] == [value(i) for i in range(100)]


def test_scan_filters_by_lsn_kind_and_run(fscase):
    store = fscase.open()
    w = store.writer()
    w.begin_run("a", {})
    w.begin_run("b", {})
    w.append_many([(kinds.VALUE, value(i, "a")) for i in range(5)])
    w.append_many([(kinds.LOOP, ["b", i, "epoch", [["epoch", i, i]], 0.0]) for i in range(3)])
    w.flush()
    assert [r.body[1] for r in store.scan(run_id="a", kinds=[kinds.VALUE])] == [0, 1, 2, 3, 4]
    assert [r.kind for r in store.scan(run_id="b")] == [kinds.RUN_BEGIN] + [kinds.LOOP] * 3
    assert [r.lsn for r in store.scan(from_lsn=8)] == [8, 9, 10]
    assert [r.lsn for r in store.records_after("a", 4)] == [5, 6, 7]
    assert sum(len(f) for f in store.scan_frames(from_lsn=4)) == 7


def test_checkpoint_round_trips_exact_bytes_and_meta(fscase):
    store = fscase.open(page_bytes=4096)
    w = store.writer()
    w.begin_run("r1", {})
    weights = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    zeros = np.zeros(3000, dtype=np.int64)
    info = w.write_checkpoint("r1", {"seq": 7, "ctx": [["epoch", 0, 0]]}, [weights, zeros, b""])
    assert isinstance(info, CheckpointInfo) and info.raw_bytes == weights.nbytes + zeros.nbytes
    w.end_run("r1", "finished", {"error": None})
    store.close()

    again = fscase.open()
    (ck,) = again.checkpoints("r1")
    assert ck == info
    meta, blobs = again.load_checkpoint(ck)
    assert meta == {"seq": 7, "ctx": [["epoch", 0, 0]]}
    assert bytes(blobs[0]) == weights.tobytes()
    assert bytes(blobs[1]) == zeros.tobytes()
    assert bytes(blobs[2]) == b""
    assert again.runs()["r1"].status == "finished"
    assert again.check() == []


def test_nearest_checkpoint_respects_lsn_bound_and_predicate(fscase):
    store = fscase.open()
    w = store.writer()
    w.begin_run("r1", {})
    cks = [w.write_checkpoint("r1", {"epoch": e}, [bytes([e]) * 100]) for e in range(4)]
    assert store.nearest_checkpoint("r1") == cks[3]
    assert store.nearest_checkpoint("r1", at_or_before_lsn=cks[2].lsn) == cks[2]
    assert store.nearest_checkpoint("r1", at_or_before_lsn=cks[2].lsn - 1) == cks[1]
    assert store.nearest_checkpoint("r1", where=lambda m: m["epoch"] < 2) == cks[1]
    assert store.nearest_checkpoint("r1", at_or_before_lsn=cks[0].lsn - 1) is None
    assert store.nearest_checkpoint("other") is None
