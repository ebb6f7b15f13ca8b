"""Store behaviour beyond round trips: run status, resume, refresh, index checkpoints, pages."""

from __future__ import annotations

import numpy as np
from florql_storage import Store, kinds
from florql_storage.format import INDEX_DIR
from florql_storage.fs import MemFS

from .conftest import value


def test_run_status_running_finished_failed_crashed(fscase):
    s = fscase.open()
    w = s.writer()
    for rid in ("a", "b", "c"):
        w.begin_run(rid, {"script": "t.py"})
    w.end_run("a", "finished", {"error": None})
    w.end_run("b", "failed", {"error": "ValueError: x"})
    reader = fscase.open()
    runs = reader.runs()
    assert {k: v.status for k, v in runs.items()} == {
        "a": "finished",
        "b": "failed",
        "c": "running",
    }
    assert runs["b"].end["error"] == "ValueError: x" and runs["a"].meta["script"] == "t.py"
    w.close()  # the writer goes away without ending c: nobody holds its lock any more
    assert reader.runs()["c"].status == "crashed"


def test_resume_makes_a_crashed_run_running_then_finished(fscase):
    s = fscase.open()
    w = s.writer()
    w.begin_run("r", {})
    w.append(kinds.VALUE, value(1, "r"))
    w.close()
    s2 = fscase.open()
    assert s2.runs()["r"].status == "crashed"
    w2 = s2.writer()
    w2.resume_run("r", {"seq": 1, "ckpt_id": None})
    assert fscase.open().runs()["r"].status == "running"
    w2.append(kinds.VALUE, value(2, "r"))
    w2.end_run("r", "finished", {})
    info = fscase.open().runs()["r"]
    assert info.status == "finished" and info.last_lsn == s2.last_lsn
    kinds_seen = [r.kind for r in fscase.open().scan(run_id="r")]
    assert kinds_seen == [
        kinds.RUN_BEGIN,
        kinds.VALUE,
        kinds.RUN_RESUME,
        kinds.VALUE,
        kinds.RUN_END,
    ]


def test_refresh_reads_what_another_store_appended(fscase):
    reader = fscase.open()
    w = fscase.open().writer()
    w.append_many([(kinds.VALUE, value(i)) for i in range(5)])
    w.flush()
    assert reader.last_lsn == 0 and list(reader.scan()) == []  # a consistent snapshot
    assert reader.refresh() == 5
    assert [r.body[1] for r in reader.scan()] == [0, 1, 2, 3, 4]
    w.write_checkpoint("r1", {"k": 1}, [b"x" * 10])
    reader.refresh()
    assert [c.meta for c in reader.checkpoints()] == [{"k": 1}]


def test_open_redoes_only_the_log_after_the_last_index_checkpoint():
    class CountingFS(MemFS):
        bytes_read = 0

        def read(self, path, offset=0, length=None):
            data = super().read(path, offset, length)
            if "/log/" in path:
                CountingFS.bytes_read += len(data)
            return data

    fs = CountingFS()
    s = Store.open("/s", fs=fs, index_records=1000)
    w = s.writer()
    for i in range(20_000):
        w.append(kinds.VALUE, value(i))
        if i % 500 == 0:
            w.flush()
    w.flush()
    log_bytes = sum(fs.size(f"/s/log/{n}") for n in fs.listdir("/s/log"))
    assert len(fs.listdir(f"/s/{INDEX_DIR}")) == 1  # older index files are removed
    CountingFS.bytes_read = 0
    again = Store.open("/s", fs=fs)
    assert again.last_lsn == 20_000
    assert CountingFS.bytes_read < log_bytes / 10
    assert [r.lsn for r in again.scan(from_lsn=19_990)] == list(range(19_990, 20_001))


def test_damaged_index_checkpoint_falls_back_to_full_redo_and_check_reports_it(fscase):
    s = fscase.open(index_records=50)
    w = s.writer()
    w.begin_run("r", {})
    w.append_many([(kinds.VALUE, value(i, "r")) for i in range(100)])
    w.flush()
    idx = fscase.path(s._manifest.index["file"])
    data = bytearray(fscase.fs.read(idx))
    data[-3] ^= 0x55
    fscase.fs.write_file(idx, bytes(data))
    again = fscase.open()
    assert again.last_lsn == 101 and again.runs()["r"].last_lsn == 101
    assert [p.kind for p in again.check()] == ["index"]


def test_second_checkpoint_stores_only_changed_pages(fscase):
    s = fscase.open(page_bytes=64 << 10)
    w = s.writer()
    rng = np.random.default_rng(1)
    layers = [rng.standard_normal(64 << 10).astype(np.float32) for _ in range(4)]  # 256 KiB each
    first = w.write_checkpoint("a", {}, layers)
    layers[1] = layers[1] + 1
    layers[3] = layers[3] * 2
    second = w.write_checkpoint("a", {}, layers)
    third = (
        fscase.open(page_bytes=64 << 10).writer().write_checkpoint("b", {}, layers)
    )  # other writer
    assert first.stored_bytes >= first.raw_bytes  # trained-like floats are stored raw
    assert abs(second.stored_bytes - first.stored_bytes / 2) < first.stored_bytes * 0.01
    assert third.stored_bytes == 0
    _, blobs = fscase.open().load_checkpoint(third)
    assert all(bytes(b) == layer.tobytes() for b, layer in zip(blobs, layers, strict=True))


def test_compressible_blob_is_compressed_random_blob_is_not(fscase):
    s = fscase.open()
    w = s.writer()
    zeros = np.zeros(1 << 20, dtype=np.float32)
    noise = np.random.default_rng(2).integers(0, 255, 1 << 20, dtype=np.uint8)
    ck = w.write_checkpoint("r", {}, [zeros])
    assert ck.stored_bytes < ck.raw_bytes / 50
    ck2 = w.write_checkpoint("r", {}, [noise])
    assert ck2.raw_bytes <= ck2.stored_bytes < ck2.raw_bytes * 1.01
    _, (z,) = fscase.open().load_checkpoint(ck)
    assert bytes(z) == zeros.tobytes()


def test_loaded_blobs_are_writable_buffers_usable_by_numpy(fscase):
    s = fscase.open()
    arr = np.arange(1000, dtype=np.float64)
    ck = s.writer().write_checkpoint("r", {"dtype": "float64"}, [arr])
    _, (blob,) = fscase.open().load_checkpoint(ck)
    out = np.frombuffer(blob, dtype=np.float64)
    out[0] = 5.0  # writable: restore code may copy_ into it or use it in place
    assert np.array_equal(out[1:], arr[1:])


def test_damaged_page_is_reported_by_load_and_check(fscase):
    s = fscase.open()
    ck = s.writer().write_checkpoint("r", {}, [np.arange(5000, dtype=np.int32)])
    (page_file,) = fscase.fs.listdir(fscase.path("pages"))
    path = fscase.path(f"pages/{page_file}")
    data = bytearray(fscase.fs.read(path))
    data[100] ^= 1
    fscase.fs.write_file(path, bytes(data))
    again = fscase.open()
    import pytest
    from florql_storage import CorruptionError

    with pytest.raises(CorruptionError) as err:
        again.load_checkpoint(ck)
    assert err.value.segment == path
    assert [p.kind for p in again.check()] == ["page_checksum"]


def test_threads_appending_concurrently_lose_nothing(fscase):
    import threading

    s = fscase.open()
    w = s.writer()

    def work(t: int) -> None:
        for i in range(300):
            w.append(kinds.VALUE, value(i, f"t{t}"))
            if i % 37 == 0:
                w.flush()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.flush()
    got = sorted((r.body[0], r.body[1]) for r in fscase.open().scan())
    assert got == sorted((f"t{t}", i) for t in range(4) for i in range(300))


def test_atomic_group_is_one_frame_of_its_own(fscase):
    s = fscase.open()
    w = s.writer()
    w.append(kinds.VALUE, value(0))
    w.append_many([(kinds.VALUE, value(i)) for i in range(1, 4)], atomic=True)
    w.append(kinds.VALUE, value(4))
    w.flush()
    frames = [[r.body[1] for r in f] for f in fscase.open().scan_frames()]
    assert frames == [[0], [1, 2, 3], [4]]


def test_scan_is_a_snapshot_while_the_same_store_keeps_writing(fscase):
    s = fscase.open()
    w = s.writer()
    w.append_many([(kinds.VALUE, value(i)) for i in range(10)])
    w.flush()
    it = s.scan()
    first = next(it)
    w.append_many([(kinds.VALUE, value(i)) for i in range(10, 20)])
    w.flush()
    assert [first.lsn] + [r.lsn for r in it] == list(range(1, 11))
    assert [r.lsn for r in s.scan()] == list(range(1, 21))


def test_page_files_roll_over_and_all_stay_readable():
    from florql_storage.pages import PageWriter, read_blob

    fs = MemFS()
    fs.mkdir("/s/pages")
    pw = PageWriter(fs, "/s", "w", file_bytes=10_000)
    rng = np.random.default_rng(3)
    blobs = [rng.integers(0, 256, 8000, dtype=np.uint8).tobytes() for _ in range(5)]
    refs, stored = pw.write_blobs(blobs, {}, page_bytes=4096)
    assert len(fs.listdir("/s/pages")) >= 3
    assert [bytes(read_blob(fs, "/s", *r)) for r in refs] == blobs
    assert stored > 0


def test_concurrent_creation_makes_one_store(tmp_path):
    import threading

    root = str(tmp_path / "new")
    stores: list = []
    errors: list = []

    def create() -> None:
        try:
            stores.append(Store.open(root))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({s._manifest.store_id for s in stores}) == 1
    w = stores[0].writer()
    w.append(kinds.VALUE, value(1))
    w.flush()
    assert stores[-1].refresh() == 1


def test_load_checkpoint_into_callers_buffers(fscase):
    import pytest
    from florql_storage import BadInputError

    s = fscase.open(page_bytes=4096)
    a, b = np.arange(3000, dtype=np.float32), np.arange(10, dtype=np.int64)
    ck = s.writer().write_checkpoint("r", {}, [a, b])
    live_a, live_b = np.zeros_like(a), np.zeros_like(b)
    _, views = fscase.open().load_checkpoint(ck.ckpt_id, into=[live_a, None])
    assert np.array_equal(live_a, a)  # read straight into the caller's memory
    assert bytes(views[1]) == b.tobytes() and not live_b.any()
    with pytest.raises(BadInputError, match="12000 bytes"):
        s.load_checkpoint(ck, into=[np.zeros(5, dtype=np.float32), None])
    with pytest.raises(BadInputError, match="2 blobs"):
        s.load_checkpoint(ck, into=[live_a])


def test_pages_with_colliding_keys_are_compared_not_trusted(fscase, monkeypatch):
    # Dedup is exact: force every page onto one key and check nothing is mixed up.
    from florql_storage import pages

    monkeypatch.setattr(pages, "page_key", lambda raw_len, raw_crc: 7)
    s = fscase.open(page_bytes=1024)
    rng = np.random.default_rng(4)
    blobs = [rng.integers(0, 256, 4096, dtype=np.uint8).tobytes() for _ in range(3)]
    w = s.writer()
    first = w.write_checkpoint("r", {}, blobs)
    second = w.write_checkpoint("r", {}, [blobs[1], bytes(4096)])
    # blobs[1] is not rewritten; the four equal zero pages become one small lz4 page.
    assert second.stored_bytes < 100
    again = fscase.open(page_bytes=1024)
    assert [bytes(b) for b in again.load_checkpoint(first)[1]] == blobs
    assert [bytes(b) for b in again.load_checkpoint(second)[1]] == [blobs[1], bytes(4096)]
