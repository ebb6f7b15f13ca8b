"""The cache's bulk decode (Store.scan_bodies, whole frames at a time) against a naive scan.

Frames mix the cases the decode loop treats apart: plain VALUE/LOOP frames, a loop first seen
in the middle of a frame, a loop known only from a value's context, a replay's end and a
resume in the same frame as values. Whether the log is ingested cold in one refresh or one
flush at a time, the tables must equal what a plain `Store.scan` computes.
"""

from __future__ import annotations

from florql_storage import kinds

from florql.sql.connection import connect
from tests.sql.storebuild import RunLog, ctx_of, naive_values, open_store

RECORDS = "SELECT run_id, lsn, seq, name, value, value_text, replay_id FROM records ORDER BY lsn"


def _naive_rows(store) -> list[tuple]:
    rows = []
    for v in naive_values(store):
        value, text = v["value"], None
        if isinstance(value, str):
            value, text = None, value
        replay = v["replay_id"] or None  # the records view shows NULL for recorded values
        rows.append((v["run_id"], v["lsn"], v["seq"], v["name"], value, text, replay))
    return rows


def _write_mixed_log(store_path: str, flushed) -> None:
    """Write the mixed frames, calling `flushed()` after every flush."""
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    flushed()
    # One frame: values, then a loop never seen before in mid-frame, then its values.
    entries = log.entries(ctx_of(epoch=0), {"loss": 1.0, "acc": 0.5})
    entries += log.entries(ctx_of(epoch=0, step=0), {"loss": 0.9})
    entries += log.entries(ctx_of(epoch=0, step=1), {"loss": 0.8, "note": "text"})
    w.append_many(entries)
    w.flush()
    flushed()
    # Plain frames of known loops only: the fast path.
    for epoch in range(1, 4):
        w.append_many(
            [e for s in range(3) for e in log.entries(ctx_of(epoch=epoch, step=s), {"loss": s})]
        )
        w.flush()
        flushed()
    # A replay: values in a context naming a loop no LOOP record announced, and the replay's
    # end, in one frame with recorded values.
    w.append(kinds.REPLAY_BEGIN, {"replay_id": "rp", "run_id": "r1", "names": ["gn"]})
    entries = log.entries(ctx_of(epoch=1, phase=7), {"gn": 0.25}, replay_id="rp")
    entries.append(
        (kinds.REPLAY_END, {"replay_id": "rp", "run_id": "r1", "status": "ok",
                            "fidelity": {"checked": 1, "matched": 1, "first_mismatch": None}})
    )  # fmt: skip
    entries += log.entries(ctx_of(epoch=4, step=0), {"loss": 0.1})
    w.append_many(entries)
    w.flush()
    flushed()
    resume_seq = log.seq - 2  # supersedes epoch 4's LOOP and value
    w.close()  # the run "crashes"
    w = store.writer()
    w.resume_run("r1", {"seq": resume_seq, "ckpt_id": "ck", "resumed_at": 0.0})
    log.w, log.seq = w, resume_seq
    w.append_many(log.entries(ctx_of(epoch=2, step=0), {"loss": 9.0, "acc": 0.75}))
    w.flush()
    flushed()
    log.end()
    w.close()
    flushed()
    store.close()


def test_cold_and_flush_by_flush_ingest_both_equal_a_naive_scan(tmp_path) -> None:
    path = str(tmp_path / ".florql")
    incremental = connect(path, replay=False)
    _write_mixed_log(path, lambda: incremental.sql("SELECT count(*) FROM records").fetchall())
    cold = connect(path, replay=False)
    store = open_store(path)
    expected = _naive_rows(store)
    assert len(expected) == 17 and any(r[6] == "rp" for r in expected)
    assert cold.sql(RECORDS).fetchall() == expected
    assert incremental.sql(RECORDS).fetchall() == expected
    wide = "SELECT run_id, epoch, step, phase, loss, acc, note, gn FROM logs ORDER BY ALL"
    assert cold.sql(wide).fetchall() == incremental.sql(wide).fetchall()
    # Loop slots are numbered in order of first appearance, whichever path met the loop.
    assert cold.cache.loops == incremental.cache.loops == ["epoch", "step", "phase"]
    replayed = "SELECT source, replay_id, diverged, phase FROM records WHERE name = 'gn'"
    assert cold.sql(replayed).fetchall() == [("replay", "rp", False, 7)]
    assert cold.cache.replays["rp"]["fidelity"]["first_mismatch"] is None
    assert cold.sql("SELECT count(*) FROM records WHERE epoch = 4").fetchall() == [(0,)]
    cold.close()
    incremental.close()
    store.close()
