"""`repair`: keep what is intact of a damaged store and make it whole again (`florql check --repair`).

A repair cuts every damaged range out of the log into `quarantine/`, leaving in its place a
hole frame that keeps LSNs dense (FORMAT.md, "Damage"); rebuilds the MANIFEST and the index
checkpoint from the segments; and drops checkpoints whose pages are damaged (a CKPT_DROP
record), so replay and resume use an earlier one. What the repaired store reads is exactly
what a tolerant open of the damaged store read (recovery.py, invariant 8).

Invariant 9 (idempotence), by the order of the writes; a crash anywhere, then repair again,
gives the same store:

1. Under the log lock, and only when no run is recording (a writer's in-memory tail must not
   point into a segment we rewrite).
2. The MANIFEST is rewritten first, with the segment list (rebuilt from the segments if it was
   damaged) and *no index checkpoint*: from here on, opening the store redoes the whole log, so
   a half-repaired store never seeks by an index that predates a rewritten segment.
3. Each damaged segment is copied to `quarantine/` (fsynced) before its repaired version,
   written beside it, is renamed over it (fsync of the folder). A rerun finds each segment
   either untouched (and redoes the same work: the same bytes give the same repaired segment)
   or repaired (no damage left in it).
4. Checkpoints with a damaged page get a CKPT_DROP record (one atomic frame); a rerun finds
   them no longer listed.
5. Last, a fresh index checkpoint (the torn tail, if any, is cut first, as a writer does).

>>> from florql_storage import Store, kinds
>>> from florql_storage.fs import MemFS
>>> fs = MemFS()
>>> with Store.open("/s", fs=fs) as s:
...     w = s.writer(); w.append(kinds.VALUE, ["r", 1, "x", 1, [], 0.0, ""]); _ = w.flush()
>>> repair("/s", fs).found_damage
False
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from . import kinds as K
from .check import cut_header, page_problem
from .committer import catch_up
from .errors import UNREADABLE, CorruptionError, StoreError
from .format import LOCK, QUARANTINE_DIR, RUNS_DIR, segment_name
from .frame import encode_hole, pack_entries
from .index_checkpoint import remove_older, write_index
from .losses import runs_hit
from .manifest import Manifest, read_manifest, write_manifest
from .realfs import RealFS
from .records import Lost
from .recovery import recover
from .salvage import manifest_from_segments
from .segment import HEADER_SIZE, FrameScanner, encode_header
from .state import StoreState
from .store import Store


@dataclass
class DroppedCheckpoint:
    ckpt_id: str
    run_id: str
    lsn: int
    reason: str


@dataclass
class RepairReport:
    """What a repair found and did. `lost` pairs each damaged range with what each run lost
    there ("r1: seq 5-9 (5 records)", losses.py), or the runs recording then."""

    root: str
    lost: list[tuple[Lost, list[str]]] = field(default_factory=list)
    dropped: list[DroppedCheckpoint] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    manifest_rebuilt: bool = False
    index_rebuilt: bool = False

    @property
    def found_damage(self) -> bool:
        return bool(self.lost or self.dropped or self.manifest_rebuilt)

    def lines(self) -> list[str]:
        """The report, one line per fact (the CLI prints these)."""
        out = []
        if self.manifest_rebuilt:
            out.append("rebuilt the MANIFEST from the log segments")
        for lost, runs in self.lost:
            who = f"; runs: {', '.join(runs)}" if runs else ""
            out.append(f"lost {lost.describe()}{who}")
        for d in self.dropped:
            out.append(
                f"dropped checkpoint {d.ckpt_id} of run {d.run_id} (LSN {d.lsn}): {d.reason}"
            )
        out += [f"quarantined {q}" for q in self.quarantined]
        if self.index_rebuilt:
            out.append("rebuilt the index checkpoint from the log")
        return out


def repair(root: str, fs=None) -> RepairReport:
    """Repair the store at `root` (see the module docstring); returns what was done.

    Raises StoreError if a run is still recording, CorruptionError if nothing of the log can be
    read. Safe to run on an intact store (it then only rewrites the index checkpoint).
    """
    if fs is None:
        fs, root = RealFS(), posixpath.abspath(root)
    report = RepairReport(root)
    lock = fs.lock(f"{root}/{LOCK}")
    try:
        _repair_log(fs, root, report)  # steps 1-3
    finally:
        lock.release()
    store = Store.open(root, create=False, fs=fs)
    try:
        if any(not lost.empty for lost, _ in report.lost):
            hit = dict(runs_hit(store, [lost for lost, _ in report.lost]))
            report.lost = [(lost, _runs_text(hit.get(lost), runs)) for lost, runs in report.lost]
        _drop_damaged_checkpoints(store, report)  # step 4
        lock = fs.lock(f"{root}/{LOCK}")
        try:  # step 5
            catch_up(store)
            store._manifest = write_index(fs, root, store._state, store._manifest)
            remove_older(fs, root, store._manifest)
            report.index_rebuilt = True
        finally:
            lock.release()
    finally:
        store.close()
    return report


def _repair_log(fs, root: str, report: RepairReport) -> None:
    """Steps 1-3 (log lock held): MANIFEST without index, then each damaged segment."""
    _refuse_if_recording(fs, root)
    manifest = _settle_manifest(fs, root, report)
    _, state, torn = recover(fs, root, manifest, tolerate=True)
    found = list(state.damage)
    if torn is not None and torn[1] == 0:  # catch_up (step 5) rewrites the header
        found.append(cut_header(root, manifest, torn[0]))
    for lost in found:
        report.lost.append((lost, state.runs_around(lost.first_lsn, lost.last_lsn)))
    if state.gaps:  # such a segment starts where the log before it ends, with a hole
        segments = [
            [n, state.gaps[n].first_lsn if n in state.gaps else f] for n, f in manifest.segments
        ]
        manifest = Manifest(store_id=manifest.store_id, segments=segments, index=None)
        write_manifest(fs, root, manifest)
    for seg_no in _damaged_segments(state):
        _repair_segment(fs, root, manifest, state, seg_no, torn, report)


def _runs_text(hit: dict[str, str] | None, around: list[str]) -> list[str]:
    """What each run lost in one range ("r1: seq 5-9 (5 records)"), from the seq gaps; the
    runs recording then when no gap tells (a range holding no run's records)."""
    if hit:
        return [f"{rid}: {what}" for rid, what in sorted(hit.items())]
    return around


def _refuse_if_recording(fs, root: str) -> None:
    runs = f"{root}/{RUNS_DIR}"
    names = fs.listdir(runs) if fs.isdir(runs) else []
    if any(fs.is_locked(f"{runs}/{n}") for n in names):
        raise StoreError(
            f"a run is still recording into the store at {root}; repair it once the run has ended"
        )


def _settle_manifest(fs, root: str, report: RepairReport) -> Manifest:
    """Step 2: the MANIFEST with the segment list and no index checkpoint, written durably."""
    try:
        manifest = read_manifest(fs, root)
    except CorruptionError:
        manifest = manifest_from_segments(fs, root)
        _quarantine_copy(fs, root, f"{root}/MANIFEST", report)
        report.manifest_rebuilt = True
    if manifest.index is not None or report.manifest_rebuilt:
        manifest = Manifest(store_id=manifest.store_id, segments=manifest.segments, index=None)
        write_manifest(fs, root, manifest)
    return manifest


def _damaged_segments(state: StoreState) -> list[int]:
    """Segments with a damaged range, header (a skip at offset 0), undecodable frame or gap
    before them, or that cannot be read."""
    nos = {seg_no for seg_no, _ in state.skips} | {seg_no for seg_no, _ in state.undecodable}
    return sorted(nos | set(state.dead) | set(state.gaps))


def _repair_segment(fs, root, manifest, state, seg_no, torn, report) -> None:
    """Step 3: quarantine one damaged segment and put its repaired version in its place."""
    rel = segment_name(seg_no)
    path = f"{root}/{rel}"
    firsts = dict(manifest.segments)
    nos = [n for n, _ in manifest.segments]
    i = nos.index(seg_no)
    next_first = manifest.segments[i + 1][1] if i + 1 < len(nos) else None
    header = encode_header(seg_no, manifest.store_id, firsts[seg_no])
    gap, first = state.gaps.get(seg_no), firsts[seg_no]
    lead = b""
    if gap is not None:
        lead = _hole(gap.first_lsn, gap.last_lsn, rel, HEADER_SIZE)
        first = gap.last_lsn + 1
    if seg_no in state.dead:
        body = lead + _dead_body(first, next_first, rel)
    else:
        end = torn[1] if torn is not None and torn[0] == seg_no else None
        body = lead + _salvaged_body(fs, path, seg_no, first, next_first, state, end, rel)
    _quarantine_copy(fs, root, path, report)
    tmp = f"{root}/{QUARANTINE_DIR}/{posixpath.basename(rel)}.repaired"
    fs.write_file(tmp, header + body)
    fs.fsync(tmp)
    fs.rename(tmp, path)
    fs.fsync_dir(posixpath.dirname(path))
    fs.fsync_dir(f"{root}/{QUARANTINE_DIR}")


def _dead_body(first: int, next_first: int | None, rel: str) -> bytes:
    """A lost segment: one hole over its LSNs (none if it was the last: its end is unknown)."""
    if next_first is None or next_first <= first:
        return b""
    return _hole(first, next_first - 1, rel, 0)


def _salvaged_body(fs, path, seg_no, first, next_first, state, end, rel) -> bytes:
    """The frames of a damaged segment after its header, with a hole frame for each damaged
    range (the ranges and resume points the tolerant redo found: `state.skips`)."""
    out = bytearray()
    offset, lsn = HEADER_SIZE, first
    while True:
        scanner = FrameScanner(fs, path, offset, lsn, end)
        for f in scanner:
            if (seg_no, f.offset) in state.undecodable:
                out += _hole(f.base_lsn, f.base_lsn + f.nrecs - 1, rel, f.offset)
            else:
                out += fs.read(path, f.offset, f.end - f.offset)
        stop = scanner.stop
        if stop.reason == "end" or (seg_no, stop.offset) not in state.skips:
            return bytes(out)  # the end, or the torn tail (cut: a writer would cut it too)
        to = state.skips[(seg_no, stop.offset)]
        if to is None:
            if next_first is not None and next_first > stop.lsn:
                out += _hole(stop.lsn, next_first - 1, rel, stop.offset)
            return bytes(out)
        if to[1] > stop.lsn:
            out += _hole(stop.lsn, to[1] - 1, rel, stop.offset)
        offset, lsn = to


def _hole(first: int, last: int, rel: str, offset: int) -> bytes:
    """A hole frame; its note depends only on where the lost bytes were, so a repair rerun
    after a crash writes the same bytes (invariant 9)."""
    return encode_hole(first, last, {"segment": rel, "offset": offset})


def _quarantine_copy(fs, root: str, path: str, report: RepairReport) -> str | None:
    """Keep the damaged file's bytes in quarantine/ (durably) before anything replaces it.

    Unreadable files are moved rather than copied. The same bytes get the same name, so a
    rerun after a crash reuses the copy it made (invariant 9).
    """
    qdir = f"{root}/{QUARANTINE_DIR}"
    fs.mkdir(qdir)
    base = posixpath.basename(path)
    try:
        data = fs.read(path)
    except UNREADABLE:
        data = None
    n = 0
    while True:
        name = f"{qdir}/{base}" + (f".{n}" if n else "")
        if not fs.exists(name):
            break
        try:
            if data is not None and fs.read(name) == data:
                report.quarantined.append(name)
                return name
        except UNREADABLE:
            pass
        n += 1
    if data is None:
        if not fs.exists(path):
            return None
        fs.rename(path, name)
    else:
        fs.write_file(name, data)
        fs.fsync(name)
    fs.fsync_dir(qdir)
    fs.fsync_dir(posixpath.dirname(qdir))
    report.quarantined.append(name)
    return name


def _drop_damaged_checkpoints(store, report: RepairReport) -> None:
    """Step 4: a CKPT_DROP record for each checkpoint with a damaged page."""
    entries = []
    for ckpt in store.checkpoints():
        for _raw_len, refs in store._state.ckpt_blobs[ckpt.ckpt_id]:
            problem = next(
                (p for ref in refs if (p := page_problem(store.fs, store.root, ref, ckpt))), None
            )
            if problem is not None:
                reason = f"{problem.kind} in {problem.segment} at offset {problem.offset}"
                entries.append(
                    (
                        K.CKPT_DROP,
                        {"ckpt_id": ckpt.ckpt_id, "run_id": ckpt.run_id, "reason": reason},
                    )
                )
                report.dropped.append(
                    DroppedCheckpoint(ckpt.ckpt_id, ckpt.run_id, ckpt.lsn, reason)
                )
                break
    if entries:
        store.commit([(entries, pack_entries(entries))])
