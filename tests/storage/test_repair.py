"""`check` reads every byte readers rely on (issue 11, item 7); `repair` is crash-safe
(recovery.py invariant 9) and keeps exactly the intact part (invariant 8)."""

from __future__ import annotations

import os

import msgpack
import pytest
from florql_storage import CorruptionError, Store, StoreError, kinds
from florql_storage.format import FRAME_RECORDS
from florql_storage.frame import encode_payload
from florql_storage.fs import FaultyFS, InjectedFault, MemFS, RealFS
from florql_storage.repair import repair
from florql_storage.segment import HEADER_SIZE, FrameScanner

from .conftest import value


def _store(fs, root="/s", n=300, **kw):
    s = Store.open(root, fs=fs, segment_bytes=4096, **kw)
    w = s.writer()
    w.begin_run("r1", {"script": "t.py"})
    for i in range(n):
        w.append(kinds.VALUE, value(i))
        if i % 11 == 10:
            w.flush()
    w.flush()
    ck = w.write_checkpoint("r1", {"epoch": 1}, [bytes(range(256)) * 40])
    w.end_run("r1", "finished", {})
    return s, ck


def _frames(fs, path, first):
    return [
        (f.offset, f.end, f.base_lsn, f.nrecs) for f in FrameScanner(fs, path, HEADER_SIZE, first)
    ]


def _flip(fs, path, at):
    data = bytearray(fs.read(path))
    data[at] ^= 0x40
    fs.write_file(path, bytes(data))
    fs.fsync(path)


def test_check_reports_a_damaged_frame_the_index_checkpoint_covers():
    """Item 7: the frame looks like a torn tail (nothing of a later flush follows it), but
    the index checkpoint vouches for LSNs past it, so it was durable: damage, not clean."""
    fs = MemFS()
    s = Store.open("/s", fs=fs, index_records=40)
    w = s.writer()
    for i in range(50):
        w.append(kinds.VALUE, value(i))
    w.flush()  # one flush, one frame; the index checkpoint written after it covers it
    assert s._manifest.index["lsn"] == 50
    path = "/s/log/00000001.seg"
    _flip(fs, path, HEADER_SIZE + 40)
    with pytest.raises(CorruptionError):
        list(Store.open("/s", fs=fs).scan())
    problems = Store.open("/s", fs=fs, allow_damage=True).check()
    assert [p.kind for p in problems] == ["frame_checksum"]
    assert problems[0].segment == path and problems[0].offset == HEADER_SIZE


def test_check_reports_a_flipped_page_magic():
    fs = MemFS()
    s, ck = _store(fs)
    ref = s._state.ckpt_blobs[ck.ckpt_id][0][1][0]
    _flip(fs, f"/s/{ref[1]}", ref[2] - 40)  # the first byte of "FQPG"
    assert [p.kind for p in Store.open("/s", fs=fs).check()] == ["page_header"]


def test_undecodable_frame_is_stepped_over_and_repaired():
    """A frame whose checksum holds but whose records are malformed loses only its LSNs."""
    fs = MemFS()
    s, _ = _store(fs, n=40)
    before = [tuple(r) for r in s.scan()]
    base = s.last_lsn + 1
    bad = encode_payload(base, 2, msgpack.packb([[3, ["r1"]], "junk"]))
    good = encode_payload(base + 2, 1, msgpack.packb([[3, value(999)]]))
    h = fs.open_append("/s/log/" + fs.listdir("/s/log")[-1])
    h.write(bad + good)  # the good frame is its own flush (group 0): the bad one is not a tail
    h.fsync()
    tolerant = Store.open("/s", fs=fs, allow_damage=True)
    assert [p.kind for p in tolerant.check()] == ["frame_decode"]
    got = [tuple(r) for r in tolerant.scan()]
    assert got[: len(before)] == before and got[-1][2] == value(999)
    repair("/s", fs)
    assert [tuple(r) for r in Store.open("/s", fs=fs).scan()] == got
    assert FRAME_RECORDS == 1  # the hole frame is type 2; records frames stay type 1


def _damaged_copy(scenario: str) -> tuple[MemFS, list]:
    fs = MemFS()
    s, ck = _store(fs)
    segs = s._manifest.segments
    assert len(segs) >= 3
    mid = f"/s/log/{segs[1][0]:08d}.seg"
    if scenario == "frame, page and manifest flipped":
        frames = _frames(fs, mid, segs[1][1])
        _flip(fs, mid, frames[1][0] + 30)
        ref = s._state.ckpt_blobs[ck.ckpt_id][0][1][0]
        _flip(fs, f"/s/{ref[1]}", ref[2] + 3)
        _flip(fs, "/s/MANIFEST", 25)
    else:  # a segment and the MANIFEST deleted: a gap only the headers show
        for path in (mid, "/s/MANIFEST"):
            fs.remove(path)
        fs.fsync_dir("/s/log")
        fs.fsync_dir("/s")
    want = [tuple(r) for r in Store.open("/s", fs=fs, allow_damage=True).scan()]
    return fs, want


def _snapshot(fs) -> dict:
    """What "the same store" means: its records, checkpoints, holes and the bytes of its log."""
    s = Store.open("/s", fs=fs)
    return {
        "records": [tuple(r) for r in s.scan()],
        "ckpts": [c.ckpt_id for c in s.checkpoints()],
        "holes": [(h.first_lsn, h.last_lsn) for h in s.holes()],
        "log": {n: fs.read(f"/s/log/{n}") for n in fs.listdir("/s/log")},
        "check": s.check(),
    }


@pytest.mark.parametrize("scenario", ["frame, page and manifest flipped", "segment lost"])
def test_crash_during_repair_then_repair_again_gives_the_same_store(scenario):
    """Invariant 9: fail the repair at every write in turn, drop what was not synced, repair
    again: the result is the store an uninterrupted repair gives."""
    fs, want = _damaged_copy(scenario)
    reference = fs.crash("keep")
    repair("/s", reference)
    expected = _snapshot(reference)
    assert expected["check"] == [] and expected["holes"]
    assert [r for r in expected["records"] if r[1] != kinds.CKPT_DROP] == want
    n, completed = 1, False
    while not completed:
        faulty = FaultyFS(fs.crash("keep"), fail_at=n)
        try:
            repair("/s", faulty)
            completed = True
        except (InjectedFault, StoreError):
            pass
        for mode in ("drop", "keep"):
            after = faulty.crash(mode)
            repair("/s", after)
            assert _snapshot(after) == expected, f"crash at write {n} ({mode})"
        n += 1
    assert n > 10  # the loop really stepped through the repair's writes


def test_a_run_still_recording_stops_a_repair():
    fs = MemFS()
    s = Store.open("/s", fs=fs)
    w = s.writer()
    w.begin_run("live", {"script": "t.py"})
    with pytest.raises(StoreError, match="still recording"):
        repair("/s", fs)


def test_last_segment_cut_below_its_header_is_appended_to_again():
    """A last segment cut below its header, with no index checkpoint vouching for records in
    it, opens (reading nothing of it), `check` reports it, and the next writer writes its
    header again: no repair needed. (With an index checkpoint in it, plain reads refuse it
    and `--repair` restores the header: the damage matrix covers that cell.)"""
    fs = MemFS()
    s = Store.open("/s", fs=fs)
    w = s.writer()
    for i in range(30):
        w.append(kinds.VALUE, value(i))
        w.flush()
    assert s._manifest.index is None and len(s._manifest.segments) == 1
    fs.truncate("/s/log/00000001.seg", 20)
    again = Store.open("/s", fs=fs)
    assert list(again.scan()) == [] and again.last_lsn == 0
    assert [p.kind for p in again.check()] == ["segment_header"]
    w2 = again.writer()
    w2.append(kinds.VALUE, value(1000))
    assert w2.flush() == 1
    reopened = Store.open("/s", fs=fs)
    assert [tuple(r) for r in reopened.scan()] == [(1, kinds.VALUE, value(1000))]
    assert reopened.check() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_an_unreadable_segment_is_one_sentence_on_real_files(tmp_path):
    root = str(tmp_path / "s")
    _store(RealFS(), root=root)
    seg = f"{root}/log/00000002.seg"
    os.chmod(seg, 0)
    try:
        with pytest.raises(CorruptionError, match="cannot be read .*fix its permissions"):
            list(Store.open(root, fs=RealFS()).scan())
        assert Store.open(root, fs=RealFS(), allow_damage=True).damage()
    finally:
        os.chmod(seg, 0o644)


def test_an_unreadable_segment_is_one_sentence():
    fs = FaultyFS(MemFS())
    _store(fs)
    fs.unreadable.add("/s/log/00000002.seg")
    with pytest.raises(CorruptionError) as e:
        list(Store.open("/s", fs=fs).scan())
    msg = str(e.value)
    assert "/s/log/00000002.seg" in msg and "Permission denied" in msg and "\n" not in msg


def test_check_reports_an_index_checkpoint_that_disagrees_with_the_log():
    """An index whose checksum holds but whose sparse entry points where no frame with that
    LSN starts would send readers astray: check reads it against the log."""
    from florql_storage.manifest import seal, unseal

    fs = MemFS()
    s, _ = _store(fs)
    path = f"/s/{s._manifest.index['file']}"
    body = unseal(b"FLQLIDX\0", fs.read(path), path, "index checkpoint")
    body["index"][1][2] += 7  # the second entry's offset, off by a few bytes
    fs.write_file(path, seal(b"FLQLIDX\0", body))
    assert [p.kind for p in Store.open("/s", fs=fs).check()] == ["index"]
    repair("/s", fs)
    assert Store.open("/s", fs=fs).check() == []


def test_a_segment_lost_with_the_manifest_is_reported_and_crossed():
    """MANIFEST and a middle segment both gone: the rebuilt segment list has a gap; its LSNs
    are reported lost (never silently), readers cross it, repair leaves a hole for it."""
    fs = MemFS()
    s, _ = _store(fs)
    segs = s._manifest.segments
    everything = [tuple(r) for r in s.scan()]
    gone = range(segs[1][1], segs[2][1])
    fs.remove(f"/s/log/{segs[1][0]:08d}.seg")
    fs.remove("/s/MANIFEST")
    tolerant = Store.open("/s", fs=fs, allow_damage=True)
    lost = [d for d in tolerant.damage() if d.kind == "lsn_gap"]
    assert [(d.first_lsn, d.last_lsn) for d in lost] == [(gone[0], gone[-1])]
    got = [tuple(r) for r in tolerant.scan()]
    assert got == [r for r in everything if r[0] not in gone]
    report = repair("/s", fs)
    assert report.manifest_rebuilt and any(lo.kind == "lsn_gap" for lo, _ in report.lost)
    again = Store.open("/s", fs=fs)
    assert [tuple(r) for r in again.scan()] == got and again.check() == []
    assert [(h.first_lsn, h.last_lsn) for h in again.holes()] == [(gone[0], gone[-1])]


def test_repair_names_exactly_the_records_each_run_lost():
    """The lost range cannot be read, but each run's seq counter jumps across it: the report
    names every run that lost records there and which (checked against the intact copy)."""
    fs = MemFS()
    s = Store.open("/s", fs=fs)
    w = s.writer()
    seqs = {"a": 0, "b": 0, "c": 0}
    for rid in seqs:
        w.begin_run(rid, {"script": "t.py"})
    for i in range(90):
        for rid in ("a", "b") if i % 3 else ("a", "b", "c"):
            seqs[rid] += 1
            w.append(kinds.VALUE, [rid, seqs[rid], "x", float(i), [], 0.0, ""])
        if i % 10 == 9:
            w.flush()
    for rid in seqs:
        w.end_run(rid, "finished", {})
    intact = [tuple(r) for r in s.scan()]
    path = "/s/log/00000001.seg"
    off, end, base, n = _frames(fs, path, 1)[4]
    _flip(fs, path, off + 40)
    lost_seqs: dict[str, list[int]] = {}
    for lsn, kind, body in intact:
        if base <= lsn < base + n and kind == kinds.VALUE:
            lost_seqs.setdefault(body[0], []).append(body[1])
    want = {f"{rid}: seq {min(q)}-{max(q)} ({len(q)} records)" for rid, q in lost_seqs.items()}
    assert len(want) == 3
    report = repair("/s", fs)
    ((lost, runs),) = report.lost
    assert (lost.first_lsn, lost.last_lsn) == (base, base + n - 1)
    assert set(runs) == want
