"""`Store.check()`: verify every frame of every segment and every checkpoint page.

Unlike recovery, which stops at the first damage, check reports each damaged place it can find
(resynchronising after a bad frame at the next good one) and never raises for damage.
"""

from __future__ import annotations

from .errors import CorruptionError
from .format import segment_name
from .manifest import read_manifest
from .pages import read_page_into
from .records import Problem
from .recovery import load_index, records_of, settled_manifest
from .segment import HEADER_SIZE, FrameScanner, decode_header, valid_frame_after


def check_store(store) -> list[Problem]:
    """Every problem found in `store`, log first, then pages; [] means clean."""
    problems: list[Problem] = []
    try:
        manifest = settled_manifest(store.fs, store.root, read_manifest(store.fs, store.root))
    except CorruptionError as exc:
        problems.append(Problem("manifest", exc.segment, 0, None, str(exc)))
        manifest = store._manifest  # what this Store read when it was still intact
    load_index(store.fs, store.root, manifest, problems)
    _check_log(store, manifest, problems)
    _check_pages(store, problems)
    return problems


def _check_log(store, manifest, problems: list) -> None:
    fs, segs = store.fs, manifest.segments
    expected = 1
    before = len(problems)
    for i, (seg_no, first_lsn) in enumerate(segs):
        # A gap right after damage is the damage itself, already reported.
        path = f"{store.root}/{segment_name(seg_no)}"
        try:
            decode_header(fs.read(path, 0, HEADER_SIZE), path, seg_no, manifest.store_id)
        except (CorruptionError, FileNotFoundError) as exc:
            problems.append(Problem("segment_header", path, 0, first_lsn, str(exc)))
            expected, before = first_lsn, len(problems)
            continue
        if first_lsn != expected and len(problems) == before:
            problems.append(
                Problem(
                    "lsn_gap",
                    path,
                    0,
                    expected,
                    f"segment {path} starts at LSN {first_lsn}, expected {expected}",
                )
            )
        offset, expected, before = HEADER_SIZE, first_lsn, len(problems)
        while True:
            scanner = FrameScanner(fs, path, offset, expected)
            for frame in scanner:
                try:
                    records_of(frame, path)
                except CorruptionError as exc:
                    problems.append(
                        Problem("frame_decode", path, frame.offset, frame.base_lsn, str(exc))
                    )
            stop = scanner.stop
            expected = scanner.next_lsn
            if stop.reason == "end":
                break
            # Judge damage on the bytes this scan saw (a writer may be appending beside us).
            seen = scanner.seen_end
            later = valid_frame_after(fs, path, stop.offset, stop.lsn, end=seen)
            last = i == len(segs) - 1
            if (
                last
                and stop.reason != "lsn"
                and (
                    later is None
                    or valid_frame_after(
                        fs, path, stop.offset, stop.lsn, later_flush=True, end=seen
                    )
                    is None
                )
            ):
                break  # a torn tail: the end of the log, not damage (invariant 3)
            problems.append(
                Problem(
                    "frame_" + {"bad": "checksum", "short": "truncated", "lsn": "lsn"}[stop.reason],
                    path,
                    stop.offset,
                    stop.lsn,
                    f"log segment {path}: frame at offset {stop.offset} (expected LSN {stop.lsn}) is damaged",
                )
            )
            if later is None:
                break
            offset, expected = later.offset, later.base_lsn


def _check_pages(store, problems: list) -> None:
    seen = set()
    for ckpt in store._state.ckpts:
        for _raw_len, refs in store._state.ckpt_blobs[ckpt.ckpt_id]:
            for ref in refs:
                key = (ref[1], ref[2])
                if key in seen:
                    continue
                seen.add(key)
                try:
                    read_page_into(store.fs, store.root, ref, memoryview(bytearray(ref[4])))
                except CorruptionError as exc:
                    problems.append(
                        Problem("page_checksum", exc.segment, exc.offset, ckpt.lsn, str(exc))
                    )
