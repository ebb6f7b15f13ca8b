"""Invariants 1-6 of storage/recovery.py, each test citing the one it proves."""

from __future__ import annotations

import pytest
from florql_storage import CorruptionError, Store, StoreError, kinds
from florql_storage.format import segment_name
from florql_storage.fs import FaultyFS, MemFS
from florql_storage.segment import HEADER_SIZE, FrameScanner

from .conftest import value


def _fill(store: Store, n: int, run: str = "r1", per_flush: int = 10) -> int:
    w = store.writer()
    last = 0
    for i in range(n):
        w.append(kinds.VALUE, value(i, run))
        if i % per_flush == per_flush - 1:
            last = w.flush()
    last = w.flush()
    w.close()
    return last


def test_lsns_are_dense_and_increasing_across_flushes_rolls_and_reopens(fscase):
    # Invariant 1
    store = fscase.open(segment_bytes=4096)
    _fill(store, 300)
    store.close()
    again = fscase.open(segment_bytes=4096)
    assert len(again._manifest.segments) > 3  # the log rolled over several segments
    _fill(again, 50)
    lsns = [r.lsn for r in fscase.open().scan()]
    assert lsns == list(range(1, 351))


def test_two_stores_on_one_path_interleave_without_reusing_an_lsn(fscase):
    # Invariant 1: the second writer redoes the first one's frames before assigning LSNs.
    a, b = fscase.open(), fscase.open()
    wa, wb = a.writer(), b.writer()
    for i in range(20):
        (wa if i % 2 else wb).append(kinds.VALUE, value(i))
        (wa if i % 2 else wb).flush()
    recs = list(fscase.open().scan())
    assert [r.lsn for r in recs] == list(range(1, 21))
    assert sorted(r.body[1] for r in recs) == list(range(20))


def test_a_duplicated_frame_with_a_valid_checksum_is_corruption(fscase):
    # Invariant 1: an LSN names exactly one record, so a replayed stale frame is refused.
    store = fscase.open()
    _fill(store, 10, per_flush=5)
    seg = fscase.path(segment_name(1))
    data = fscase.fs.read(seg)
    first_frame = data[HEADER_SIZE : store._state.index_pos[0][1] + (len(data) - HEADER_SIZE) // 2]
    h = fscase.fs.open_append(seg)
    h.write(first_frame)
    h.close()
    with pytest.raises(CorruptionError) as err:
        fscase.open()
    assert err.value.segment == seg and err.value.offset == len(data)


def test_a_flipped_byte_in_an_acknowledged_frame_is_never_returned(fscase):
    # Invariant 2 and 3: damage before the tail is corruption, named by segment, offset, LSN.
    store = fscase.open()
    _fill(store, 40, per_flush=10)
    seg = fscase.path(segment_name(1))
    data = bytearray(fscase.fs.read(seg))
    data[HEADER_SIZE + 30] ^= 0x01
    fscase.fs.write_file(seg, bytes(data))
    with pytest.raises(CorruptionError) as err:
        fscase.open()
    e = err.value
    assert (e.segment, e.offset, e.lsn) == (seg, HEADER_SIZE, 1)
    assert seg in str(e) and "florql check" in str(e)


def test_torn_tail_is_end_of_log(fscase):
    # Invariant 3
    store = fscase.open()
    _fill(store, 30, per_flush=10)
    seg = fscase.path(segment_name(1))
    size = fscase.fs.size(seg)
    fscase.fs.truncate(seg, size - 3)  # cut into the last frame
    again = fscase.open()
    assert again.last_lsn == 20
    assert [r.body[1] for r in again.scan()] == list(range(20))
    assert fscase.fs.size(seg) == size - 3  # opening wrote nothing


def test_writer_truncates_a_torn_tail_before_appending(fscase):
    # Invariant 3: the torn bytes go, new frames follow the last good one.
    store = fscase.open()
    _fill(store, 20, per_flush=10)
    seg = fscase.path(segment_name(1))
    h = fscase.fs.open_append(seg)
    h.write(b"\x13" * 50)  # garbage where a frame was being written
    h.close()
    again = fscase.open()
    w = again.writer()
    w.append(kinds.VALUE, value(99))
    assert w.flush() == 21
    assert [r.body[1] for r in fscase.open().scan()] == list(range(20)) + [99]
    assert fscase.open().check() == []


def test_bad_frame_followed_by_a_good_one_in_the_last_segment_is_corruption(fscase):
    # Invariant 3: a crash only damages a suffix, so a good frame after damage proves corruption.
    store = fscase.open()
    _fill(store, 30, per_flush=10)
    seg = fscase.path(segment_name(1))
    data = bytearray(fscase.fs.read(seg))
    second = store._state.tail_off  # end; find the middle frame by scanning
    frames = [o for o in _frame_offsets(fscase, seg)]
    data[frames[1] + 26] ^= 0xFF
    fscase.fs.write_file(seg, bytes(data))
    with pytest.raises(CorruptionError) as err:
        fscase.open()
    assert err.value.offset == frames[1] and err.value.lsn == 11
    assert second == len(data)
    problems = store.check()
    assert [(p.kind, p.offset, p.lsn) for p in problems] == [("frame_checksum", frames[1], 11)]


def test_corruption_in_a_non_last_segment_is_reported_not_truncated(fscase):
    # Invariant 3
    store = fscase.open(segment_bytes=4096)
    _fill(store, 300)
    assert len(store._manifest.segments) > 2
    seg = fscase.path(segment_name(1))
    size = fscase.fs.size(seg)
    fscase.fs.truncate(seg, size - 5)
    again = fscase.open()  # the index checkpoint spares open from re-reading old segments...
    with pytest.raises(CorruptionError) as err:
        list(again.scan())  # ...but reading through the damage reports it
    assert err.value.segment == seg
    assert [p.kind for p in again.check()] == ["frame_truncated"]
    assert fscase.fs.size(seg) == size - 5


def _frame_offsets(fscase, seg):
    from florql_storage.segment import FrameScanner

    return [f.offset for f in FrameScanner(fscase.fs, seg, HEADER_SIZE, 1)]


def test_checkpoint_without_durable_end_record_is_not_listed():
    # Invariant 4: crash at every operation of write_checkpoint; the checkpoint is either absent
    # or complete and loadable.
    blob = bytes(range(256)) * 400
    n = 1
    while True:
        base = MemFS()
        Store.open("/s", fs=base).writer().begin_run("r1", {})
        fs = FaultyFS(base, fail_at=n)
        store = Store.open("/s", fs=fs, page_bytes=8192)
        w = store.writer()
        try:
            w.write_checkpoint("r1", {"n": n}, [blob])
            done = True
        except (OSError, StoreError):
            done = False
        after = Store.open("/s", fs=fs.crash("drop"))
        cks = after.checkpoints("r1")
        if done:
            assert len(cks) == 1
        for ck in cks:
            meta, blobs = after.load_checkpoint(ck)
            assert meta == {"n": n} and bytes(blobs[0]) == blob
        if done:
            break
        n += 1
    assert n > 5


def test_recovery_interrupted_at_any_read_then_rerun_gives_the_same_store():
    # Invariant 5: recovery only reads, so a crash inside it changes nothing.
    base = MemFS()
    store = Store.open("/s", fs=base, segment_bytes=4096, index_records=50)
    _fill(store, 200)
    seg = f"/s/{segment_name(len(store._manifest.segments))}"
    h = base.open_append(seg)
    h.write(b"\x01\x02\x03")  # a torn tail for recovery to find
    reference = [tuple(r) for r in Store.open("/s", fs=base).scan()]
    n = 1
    while True:
        fs = FaultyFS(base, fail_at=n, count_reads=True)
        try:
            Store.open("/s", fs=fs)
            break
        except OSError:
            pass
        after = fs.crash("keep")
        assert [tuple(r) for r in Store.open("/s", fs=after).scan()] == reference
        n += 1
    assert n > 3


def test_crash_while_a_writer_truncates_a_torn_tail_then_again_gives_the_same_store():
    # Invariant 5 (and 6): the truncation is the only recovery write; redoing it is harmless.
    base = MemFS()
    store = Store.open("/s", fs=base)
    _fill(store, 20)
    h = base.open_append(f"/s/{segment_name(1)}")
    h.write(b"\xff" * 40)
    base.fsync(f"/s/{segment_name(1)}")
    reference = [tuple(r) for r in Store.open("/s", fs=base).scan()]
    for n in range(1, 12):
        fs = FaultyFS(base.crash("keep"), fail_at=n)
        try:
            w = Store.open("/s", fs=fs).writer()
            w.append(kinds.VALUE, value(1000))
            w.flush()
        except (OSError, StoreError):
            pass
        for mode in ("drop", "garble"):
            got = [tuple(r) for r in Store.open("/s", fs=fs.crash(mode, seed=n)).scan()]
            assert got[: len(reference)] == reference
            assert got[len(reference) :] in ([], [(21, kinds.VALUE, value(1000))])


def test_torn_multi_frame_flush_is_end_of_log_even_with_a_later_frame_intact(fscase):
    # Invariant 3: frames of one flush reach the disk in any order; a good frame of the same
    # flush after a lost one is still the torn tail, not corruption.
    store = fscase.open()
    _fill(store, 10, per_flush=10)
    before = store.last_lsn
    w = store.writer()
    w.append(kinds.VALUE, value(100))
    w.append_many([(kinds.VALUE, value(101)), (kinds.VALUE, value(102))], atomic=True)
    w.append(kinds.VALUE, value(103))
    w.flush()
    seg = fscase.path(segment_name(1))
    offsets = _frame_offsets(fscase, seg)
    assert len(offsets) == 4  # one earlier flush + three frames of this one
    data = bytearray(fscase.fs.read(seg))
    data[offsets[1] : offsets[2]] = bytes(offsets[2] - offsets[1])  # first frame never reached disk
    fscase.fs.write_file(seg, bytes(data))
    again = fscase.open()
    assert again.last_lsn == before
    assert again.check() == []
    w2 = again.writer()
    w2.append(kinds.VALUE, value(200))
    assert w2.flush() == before + 1  # the writer cut the torn flush and appended after it
    assert [r.body[1] for r in fscase.open().scan()][-1] == 200


@pytest.mark.parametrize("payload", [[[3]], [5, 6], [[17, {"run_id": "r", "ckpt_id": 1}]]])
def test_checksummed_frame_with_malformed_records_is_corruption_not_a_crash(fscase, payload):
    # Invariant 2: nothing malformed is handed out, even when its checksum is valid.
    import msgpack
    from florql_storage.frame import encode_payload

    store = fscase.open()
    _fill(store, 3, per_flush=3)
    seg = fscase.path(segment_name(1))
    h = fscase.fs.open_append(seg)
    h.write(encode_payload(4, len(payload), msgpack.packb(payload)))
    h.close()
    with pytest.raises(CorruptionError, match="malformed|decoded"):
        list(fscase.open().scan())


def test_check_reports_a_damaged_manifest_instead_of_raising(fscase):
    store = fscase.open()
    _fill(store, 5)
    fscase.fs.write_file(fscase.path("MANIFEST"), b"garbage")
    assert [p.kind for p in store.check()] == ["manifest"]


class _ReadsBesideAWriter(MemFS):
    """A MemFS whose next read of `path` past `cut` ends at `cut`: what a reader sees while
    another process is in the middle of appending the frame there (the writer finishes
    before anything reads again)."""

    path: str | None = None
    cut = 0

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        if path == self.path and offset >= HEADER_SIZE:
            self.path = None  # only this one read sees the half-written file
            end = self.cut if length is None else min(self.cut, offset + length)
            return super().read(path, offset, max(0, end - offset))
        return super().read(path, offset, length)


def test_a_frame_appended_beside_a_reader_is_the_tail_not_damage():
    # Invariant 3 with a writer in another process: the reader's scan sees frame 2 cut short at
    # the end of the file; by the time it looks for evidence of damage the writer has finished
    # frame 2 and written frame 3. Judged on the bytes the scan saw, that is the tail.
    fs = _ReadsBesideAWriter()
    store = Store.open("/s", fs=fs)
    _fill(store, 30, per_flush=10)  # three frames of ten records
    store.close()
    seg = f"/s/{segment_name(1)}"
    frames = list(FrameScanner(fs, seg, HEADER_SIZE, 1))
    assert len(frames) == 3
    fs.path, fs.cut = seg, frames[1].offset + 20
    reader = Store.open("/s", fs=fs, create=False)
    assert [r.lsn for r in reader.scan()] == list(range(1, 11))
    assert reader.refresh() == 30  # the next look sees the finished frames
    assert [r.lsn for r in reader.scan()] == list(range(1, 31))
