"""The CLI's on-disk query cache: reused across processes, never mistaken for the truth."""

from __future__ import annotations

import shutil

import pytest

from florql.sql import persist
from florql.sql.connection import Connection
from tests.sql.storebuild import RunLog, ctx_of, open_store


def _write(path: str, run_id: str, epochs: range, value: float = 1.0) -> None:
    store = open_store(path)
    w = store.writer()
    log = RunLog(w, run_id)
    for epoch in epochs:
        for step in range(3):
            log.log(ctx_of(epoch=epoch, step=step), {"loss": value * epoch + step})
        log.log(ctx_of(epoch=epoch), {"acc": value * epoch, "tag": f"e{epoch}"})
    log.end()
    w.close()
    store.close()


def _answer(path: str) -> tuple[list, int, bool]:
    con = Connection(path, replay=False, persist=True)
    try:
        rows = con.sql(
            "SELECT run_id, epoch, step, loss, acc, tag FROM logs ORDER BY ALL"
        ).fetchall()
        return rows, con.cache.decoded_records, con.cache.persistent
    finally:
        con.close()


@pytest.fixture
def store_path(tmp_path) -> str:
    path = str(tmp_path / ".florql")
    _write(path, "r1", range(1, 4))
    return path


def test_a_second_process_reuses_the_cache_and_decodes_nothing(store_path: str) -> None:
    first, decoded, persistent = _answer(store_path)
    assert persistent and decoded > 0
    again, decoded, _ = _answer(store_path)
    assert again == first and decoded == 0


def test_the_cache_catches_up_with_only_the_new_records(store_path: str) -> None:
    first, _, _ = _answer(store_path)
    _write(store_path, "r2", range(1, 3), value=2.0)
    rows, decoded, _ = _answer(store_path)
    fresh = Connection(store_path, replay=False)  # in memory: the reference answer
    want = fresh.sql("SELECT run_id, epoch, step, loss, acc, tag FROM logs ORDER BY ALL").fetchall()
    fresh.close()
    assert rows == want and len(rows) > len(first)
    assert 0 < decoded < 30  # run r2's records only


def test_a_deleted_cache_is_rebuilt(store_path: str) -> None:
    first, _, _ = _answer(store_path)
    shutil.rmtree(persist.cache_dir())  # "it can be deleted at any time"
    again, decoded, _ = _answer(store_path)
    assert again == first and decoded > 0


def test_a_cache_that_disagrees_with_the_store_is_rebuilt(store_path: str) -> None:
    first, _, _ = _answer(store_path)
    con = Connection(store_path, replay=False, persist=True)
    con.refresh()
    # Pretend the cache ingested a different record at its last LSN (a rolled-back store).
    state = con.cache.state() | {"fingerprint": "not-the-record", "store_id": "x"}
    persist.save_state(con._duck, state | {"store_id": persist.store_id_of(con._open_store())})
    con._duck.execute("DELETE FROM _values WHERE name = 'loss'")  # and its tables are wrong
    con.close()
    again, decoded, _ = _answer(store_path)
    assert again == first and decoded > 0


def test_a_second_connection_in_one_process_keeps_its_cache_in_memory(store_path: str) -> None:
    a = Connection(store_path, replay=False, persist=True)
    b = Connection(store_path, replay=False, persist=True)
    try:
        assert (
            a.sql("SELECT count(*) FROM logs").fetchall()
            == b.sql("SELECT count(*) FROM logs").fetchall()
        )
        assert a.cache.persistent and not b.cache.persistent
    finally:
        a.close()
        b.close()


def test_a_resumed_run_restored_from_the_cache_still_hides_superseded_values(tmp_path) -> None:
    path = str(tmp_path / ".florql")
    store = open_store(path)
    w = store.writer()
    log = RunLog(w, "r1")
    for epoch in range(1, 4):
        log.log(ctx_of(epoch=epoch), {"acc": float(epoch)})
    w.close()  # crash
    con = Connection(path, replay=False, persist=True)
    assert con.sql("SELECT count(*) FROM logs").fetchall() == [(3,)]  # cached: the crashed run
    con.close()
    w = store.writer()
    w.resume_run("r1", {"seq": 2, "ckpt_id": "ck", "resumed_at": 0.0})
    log.w, log.seq = w, 2
    for epoch in range(2, 4):
        log.log(ctx_of(epoch=epoch), {"acc": epoch * 10.0})
    log.end()
    w.close()
    store.close()
    con = Connection(path, replay=False, persist=True)
    rows = con.sql("SELECT epoch, acc FROM logs ORDER BY epoch").fetchall()
    assert con.cache.persistent
    con.close()
    assert rows == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_a_cache_from_another_version_is_rebuilt(store_path: str) -> None:
    first, _, _ = _answer(store_path)
    con = Connection(store_path, replay=False, persist=True)
    con.refresh()
    state = con.cache.state() | {"store_id": persist.store_id_of(con._open_store())}
    del state["name_slots"]  # what an older florql wrote
    persist.save_state(con._duck, state)
    con.close()
    again, decoded, persistent = _answer(store_path)
    assert again == first and decoded > 0 and persistent
