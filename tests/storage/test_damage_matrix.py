"""The damage matrix: every kind of damage to every kind of file in a store, each cell checked
against the row `storage/FORMAT.md` ("Damage matrix") writes down for it.

Per cell: what `check` reports; what a plain read does; what a tolerant open reads (exactly the
naive scan of an undamaged copy minus the documented lost LSNs: nothing outside the damaged range
is lost, invariant 8); that `repair` keeps exactly that, leaves `check` clean, drops exactly the
checkpoints with damaged pages, and that repairing again changes nothing (invariant 9).
"""

from __future__ import annotations

import pathlib
import re

import pytest
from florql_storage import CorruptionError, Store, kinds
from florql_storage.format import PAGE_HEADER
from florql_storage.fs import FaultyFS, MemFS
from florql_storage.repair import repair
from florql_storage.segment import HEADER_SIZE, FrameScanner

ROOT = "/s"
FORMAT_MD = pathlib.Path(__file__).resolve().parents[2] / "storage" / "FORMAT.md"


def matrix_rows() -> list[dict]:
    """The rows of FORMAT.md's damage matrix, as dicts keyed by its header."""
    text = FORMAT_MD.read_text().split("### Damage matrix", 1)[1]
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


ROWS = matrix_rows()


def _build() -> tuple[MemFS, dict]:
    """Two interleaved runs over several segments, checkpoints of three pages each, an index
    checkpoint in the last segment and a few flushes after it."""
    fs = MemFS()
    s = Store.open(ROOT, fs=fs, segment_bytes=4096, page_bytes=4096, index_records=10**9)
    w = s.writer()
    for run in ("r1", "r2"):
        w.begin_run(run, {"script": "t.py"})
    ckpts = []
    for i in range(900):
        run = "r1" if i % 3 else "r2"
        w.append(kinds.VALUE, [run, i, "loss", i * 0.5, [["epoch", i // 100, i // 100]], 0.0, ""])
        if i % 17 == 16:
            w.flush()
        if i % 300 == 299:
            blob = bytes((i + k) % 251 for k in range(10_000))
            ckpts.append(w.write_checkpoint(run, {"epoch": i // 100}, [blob]))
    w.flush()
    index_lsn = s._manifest.index["lsn"]
    for i in range(900, 960):  # flushes after the index checkpoint (the tail)
        w.append(kinds.VALUE, ["r1", i, "loss", 0.0, [], 0.0, ""])
        if i % 20 == 19:
            w.flush()
    w.end_run("r1", "finished", {})
    w.end_run("r2", "finished", {})
    meta = {
        "records": [tuple(r) for r in s.scan()],
        "segments": [list(x) for x in s._manifest.segments],
        "ckpts": [c.ckpt_id for c in s.checkpoints()],
        "ckpt_lsn": {c.ckpt_id: c.lsn for c in s.checkpoints()},
        "blobs": {c: s._state.ckpt_blobs[c] for c in [c.ckpt_id for c in ckpts]},
        "index": s._manifest.index,
        "index_lsn": index_lsn,
    }
    s.close()
    meta["frames"] = {n: _frames(fs, n, first) for n, first in meta["segments"]}
    assert len(meta["segments"]) >= 3 and meta["index"]["seg_no"] == meta["segments"][-1][0]
    return fs, meta


def _frames(fs, seg_no: int, first: int) -> list:
    sc = FrameScanner(fs, f"{ROOT}/log/{seg_no:08d}.seg", HEADER_SIZE, first)
    return [(f.offset, f.end, f.base_lsn, f.nrecs) for f in sc]


FS, META = _build()


def _seg_path(seg_no: int) -> str:
    return f"{ROOT}/log/{seg_no:08d}.seg"


def _seg_span(i: int) -> range:
    segs = META["segments"]
    first = segs[i][1]
    end = segs[i + 1][1] if i + 1 < len(segs) else META["records"][-1][0] + 1
    return range(first, end)


class Cell:
    """A damaged copy of the store and what FORMAT.md says about it."""

    def __init__(self, row: dict) -> None:
        self.row = row
        self.fs = FaultyFS(FS.crash("keep"))
        self.lost: set[int] = set()
        self.dropped: set[str] = set()
        self._damage(row["file"], row["damage"])

    def _damage(self, target: str, damage: str) -> None:
        segs = META["segments"]
        mid = segs[1][0]
        last_i = len(segs) - 1
        if target.startswith("segment header"):
            self._apply(_seg_path(mid), damage, at=10)
        elif target.startswith("segment (not"):
            self._apply(_seg_path(mid), damage, at=20)
            self.lost = set(_seg_span(1))
        elif target.startswith("middle frame"):
            frames = META["frames"][mid]
            off, end, base, n = frames[len(frames) // 2]
            self._apply(_seg_path(mid), damage, at=off + (end - off) // 2)
            stop = base + n if damage == "flip" else _seg_span(1).stop
            self.lost = set(range(base, stop))
        elif target.startswith("tail frame"):
            off, end, base, n = META["frames"][segs[-1][0]][-1]
            assert base > META["index_lsn"]
            self._apply(_seg_path(segs[-1][0]), damage, at=off + (end - off) // 2)
            self.lost = set(range(base, base + n))
        elif target == "last segment":
            self._apply(_seg_path(segs[-1][0]), damage, at=20)
            self.lost = set(_seg_span(last_i))
        elif target.startswith("checkpoint page") or target == "page file":
            ckpt = META["ckpts"][1]
            ref = META["blobs"][ckpt][0][1][1]  # the second page of its only blob
            name, offset = ref[1], ref[2]
            at = offset + 5 if "data" in target else offset - PAGE_HEADER.size
            size = self.fs.base.size(f"{ROOT}/{name}")
            self._apply(f"{ROOT}/{name}", damage, at=at)
            # The whole file for delete/unreadable; for a cut, the pages that ran past it.
            cut = size // 2 if damage == "truncate" else 0
            self.dropped = {
                c
                for c, blobs in META["blobs"].items()
                for _raw, refs in blobs
                for r in refs
                if r[1] == name and (r[2] == offset if target != "page file" else r[2] + r[3] > cut)
            }
        elif target == "MANIFEST":
            self._apply(f"{ROOT}/MANIFEST", damage, at=30)
        elif target == "index checkpoint":
            self._apply(f"{ROOT}/{META['index']['file']}", damage, at=30)
        else:
            raise AssertionError(f"FORMAT.md names a file the test does not know: {target}")

    def _apply(self, path: str, damage: str, at: int) -> None:
        base = self.fs.base
        if damage == "flip":
            data = bytearray(base.read(path))
            data[at] ^= 0x5A
            base.write_file(path, bytes(data))
        elif damage == "truncate below header":
            base.truncate(path, at)
        elif damage in ("truncate inside it", "truncate"):
            base.truncate(path, at if damage != "truncate" else base.size(path) // 2)
        elif damage == "delete":
            base.remove(path)
        elif damage == "unreadable":
            self.fs.unreadable.add(path)
        else:
            raise AssertionError(f"FORMAT.md names a damage the test does not know: {damage}")

    def expected_records(self) -> list[tuple]:
        return [r for r in META["records"] if r[0] not in self.lost]


def _ids(row: dict) -> str:
    return f"{row['file'].split(' (')[0]}-{row['damage']}"


def test_the_matrix_covers_every_file_kind_and_damage():
    targets = {r["file"].split(" (")[0] for r in ROWS}
    assert {"segment", "middle frame", "tail frame", "last segment", "MANIFEST"} <= targets
    assert {"checkpoint page data", "checkpoint page header", "index checkpoint"} <= targets
    assert {r["damage"] for r in ROWS} >= {"flip", "delete", "unreadable", "truncate"}


@pytest.mark.parametrize("row", ROWS, ids=_ids)
def test_damage_cell_behaves_as_format_md_says(row):
    cell = Cell(row)
    fs = cell.fs
    # check: exactly the documented problem kinds
    tolerant = Store.open(ROOT, fs=fs, allow_damage=True)
    kinds_found = sorted({p.kind for p in tolerant.check()})
    assert kinds_found == ([] if row["check"] == "clean" else [row["check"]]), tolerant.check()
    # tolerant read: the naive scan of the undamaged copy minus exactly the lost LSNs
    got = [tuple(r) for r in tolerant.scan()]
    assert got == cell.expected_records()
    if "silently" in row["lost"]:
        assert tolerant.damage() == []
    # plain read
    _check_plain(fs, row["plain"], cell)
    # repair keeps exactly what the tolerant open read; check is clean after it
    report = repair(ROOT, fs)
    assert {d.ckpt_id for d in report.dropped} == cell.dropped
    for lsn in cell.lost - {r[0] for r in got}:
        assert (
            any(
                lost.first_lsn <= lsn and (lost.last_lsn is None or lsn <= lost.last_lsn)
                for lost, _runs in report.lost
            )
            or "silently" in row["lost"]
        ), f"LSN {lsn} lost but not reported"
    repaired = Store.open(ROOT, fs=fs)
    after = [tuple(r) for r in repaired.scan()]
    assert [r for r in after if r[1] != kinds.CKPT_DROP] == got
    assert {r[2]["ckpt_id"] for r in after if r[1] == kinds.CKPT_DROP} == cell.dropped
    assert repaired.check() == []
    # A checkpoint is gone only if dropped, or if its end record was in the lost range.
    assert [c.ckpt_id for c in repaired.checkpoints()] == [
        c for c in META["ckpts"] if c not in cell.dropped and META["ckpt_lsn"][c] not in cell.lost
    ]
    # repairing again finds nothing and changes nothing (invariant 9)
    assert not repair(ROOT, fs).found_damage
    assert [tuple(r) for r in Store.open(ROOT, fs=fs).scan()] == after
    # and the store takes new records
    w = repaired.writer()
    w.append(kinds.VALUE, ["r3", 1, "x", 1.0, [], 0.0, ""])
    last = w.flush()
    assert [tuple(r) for r in Store.open(ROOT, fs=fs).scan(from_lsn=last)][0][2][0] == "r3"


def _check_plain(fs, expect: str, cell: Cell) -> None:
    try:
        store = Store.open(ROOT, fs=fs)
        plain = [tuple(r) for r in store.scan()]
    except CorruptionError as exc:
        assert expect == "refused", f"plain read refused ({exc}), FORMAT.md says {expect}"
        assert "\n" not in str(exc) and ROOT in str(exc)
        return
    if expect == "reads all":
        assert plain == META["records"]
    else:
        assert re.match(r"reads all but", expect), f"plain read worked, FORMAT.md says {expect}"
        assert plain == cell.expected_records()
