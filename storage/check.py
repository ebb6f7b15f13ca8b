"""`Store.check()`: verify every byte a reader relies on; never raises for damage.

What is verified, file by file (FORMAT.md, "Damage"):

- MANIFEST: magic, checksum, fields.
- index checkpoint: magic, checksum, body; and that it agrees with the log (each sparse-index
  entry is the start of a frame with that LSN, each checkpoint it lists is one the log lists).
- log segments: every header and every frame (checksum, LSN continuity, decodable records),
  by a tolerant redo of the whole log, which resynchronises after each damaged range and so
  reports them all (recovery.py, invariant 8). A bad frame where the log could end is a torn
  tail (invariant 3), unless the index checkpoint or this store already vouched for a later
  LSN: then it was durable, and it is damage.
- checkpoint pages: the 40-byte page header (magic, codec, lengths, checksums, matching the
  reference) and the page data, for every page a listed checkpoint references.

Repaired damage (hole frames, dropped checkpoints) is not a problem: `Store.holes()` lists it.
"""

from __future__ import annotations

from .errors import UNREADABLE, CorruptionError, StoreError
from .format import FRAME_HEADER, PAGE_HEADER, PAGE_MAGIC, segment_name
from .index_checkpoint import load_index
from .manifest import read_manifest
from .pages import page_key, read_page_into
from .records import Lost, Problem
from .recovery import recover, settled_manifest
from .salvage import manifest_from_segments
from .state import StoreState


def check_store(store) -> list[Problem]:
    """Every problem found in `store`: manifest, index, log, then pages; [] means clean."""
    problems: list[Problem] = []
    try:
        manifest = settled_manifest(store.fs, store.root, read_manifest(store.fs, store.root))
    except CorruptionError as exc:
        problems.append(Problem("manifest", exc.segment, 0, None, str(exc)))
        try:
            manifest = manifest_from_segments(store.fs, store.root)
        except CorruptionError:
            manifest = store._manifest
    indexed = load_index(store.fs, store.root, manifest, problems)
    try:
        _, full, torn = recover(store.fs, store.root, manifest, tolerate=True)
    except StoreError as exc:  # nothing of the log can be read at all
        problems.append(Problem("log", getattr(exc, "segment", None), 0, None, str(exc)))
        return problems
    log = [_damage_problem(lost) for lost in full.damage]
    if torn is not None and torn[1] == 0:
        log.append(_damage_problem(cut_header(store.root, manifest, torn[0])))
    else:
        _check_durable_tail(store, indexed, full, torn, log)
    problems += log
    # The index is judged against an intact log only: damage in the log is reported as such.
    if manifest.index and not log and not any(p.kind == "index" for p in problems):
        _check_index_agrees(store, manifest, indexed, full, problems)
    _check_pages(store, full, problems)
    return problems


def cut_header(root: str, manifest, seg_no: int) -> Lost:
    """The loss of a last segment cut below its header: a listed segment's header was fsynced
    before it was listed, so this is damage, never a crash; whatever it held is gone."""
    path = f"{root}/{segment_name(seg_no)}"
    first = dict(manifest.segments)[seg_no]
    why = "cut below its header (the next writer rewrites the header)"
    return Lost(first, None, path, 0, why, "segment_header")


def _damage_problem(lost) -> Problem:
    message = f"{lost.reason}: {lost.span()} cannot be read"
    return Problem(lost.kind, lost.segment, lost.offset, lost.first_lsn, message)


def _check_durable_tail(store, indexed: StoreState, full: StoreState, torn, problems) -> None:
    """A torn tail below an LSN already known durable is damage, not a torn write."""
    vouched = max(indexed.last_lsn, store._state.last_lsn)
    if torn is None or full.last_lsn >= vouched:
        return
    seg_no, offset = torn
    path = f"{store.root}/{segment_name(seg_no)}"
    problems.append(
        Problem(
            "frame_checksum",
            path,
            offset,
            full.last_lsn + 1,
            f"log segment {path}: the frame at offset {offset} (expected LSN {full.last_lsn + 1}) "
            f"is damaged or cut short, but the log was durable up to LSN {vouched}: "
            f"LSN {full.last_lsn + 1}-{vouched} cannot be read",
        )
    )


def _check_index_agrees(store, manifest, indexed: StoreState, full: StoreState, problems) -> None:
    """The index checkpoint must describe the log as it is: readers seek by its entries."""
    path = f"{store.root}/{manifest.index['file']}"
    for lsn, (seg_no, offset) in zip(indexed.index_lsns, indexed.index_pos, strict=True):
        seg = f"{store.root}/{segment_name(seg_no)}"
        try:  # the frames themselves were verified by the redo: the header says where one starts
            head = store.fs.read(seg, offset, FRAME_HEADER.size)
        except UNREADABLE:
            head = b""
        if len(head) < FRAME_HEADER.size or FRAME_HEADER.unpack(head)[5] != lsn:
            problems.append(
                Problem(
                    "index",
                    path,
                    0,
                    lsn,
                    f"index checkpoint {path} points LSN {lsn} at {seg} offset {offset}, where "
                    "no frame with that LSN starts; run `florql check --repair` to rebuild it",
                )
            )
            return
    logged = {c.ckpt_id for c in full.ckpts} | set(full.dropped)
    for c in indexed.ckpts:
        if c.ckpt_id not in logged and not full.damage:
            problems.append(
                Problem(
                    "index",
                    path,
                    0,
                    c.lsn,
                    f"index checkpoint {path} lists checkpoint {c.ckpt_id} that the log does "
                    "not hold; run `florql check --repair` to rebuild it",
                )
            )
            return


def _check_pages(store, state: StoreState, problems: list) -> None:
    seen = set()
    for ckpt in state.ckpts:
        for _raw_len, refs in state.ckpt_blobs[ckpt.ckpt_id]:
            for ref in refs:
                key = (ref[1], ref[2])
                if key in seen:
                    continue
                seen.add(key)
                problem = page_problem(store.fs, store.root, ref, ckpt)
                if problem is not None:
                    problems.append(problem)


def page_problem(fs, root: str, ref, ckpt) -> Problem | None:
    """What is wrong with one referenced page (its data, else its header), or None.

    The header is not needed to read the page (the reference carries its fields), but it is
    what a salvage of the page files would go by, so it must agree with the reference.
    """
    key, name, offset, stored_len, raw_len, codec, c = ref
    path = f"{root}/{name}"
    try:
        read_page_into(fs, root, ref, memoryview(bytearray(raw_len)))
    except CorruptionError as exc:
        return Problem(
            "page_checksum",
            exc.segment,
            exc.offset,
            ckpt.lsn,
            f"checkpoint {ckpt.ckpt_id} of run {ckpt.run_id}: {exc}",
        )
    at = offset - PAGE_HEADER.size
    head = fs.read(path, at, PAGE_HEADER.size) if at >= 0 else b""
    expected = PAGE_HEADER.pack(PAGE_MAGIC, codec, raw_len, stored_len, c, key & 0xFFFFFFFF)
    if head != expected or page_key(raw_len, key & 0xFFFFFFFF) != key:
        return Problem(
            "page_header",
            path,
            at,
            ckpt.lsn,
            f"checkpoint {ckpt.ckpt_id} of run {ckpt.run_id}: the page header in {path} at "
            f"offset {at} does not match its reference",
        )
    return None
