"""Salvage: what the log segments themselves say when the MANIFEST cannot be read.

Segments and frames are self-describing (a header with segment number, store id and first LSN;
frames with base LSN and checksum), so the segment list the MANIFEST keeps can be rebuilt from
the files in `log/`. A tolerant open uses the result in memory; `repair` writes it.

>>> from florql_storage.fs import MemFS
>>> from florql_storage.segment import encode_header
>>> fs = MemFS(); fs.mkdir("/s/log")
>>> fs.write_file("/s/log/00000001.seg", encode_header(1, bytes(16), 1))
>>> fs.write_file("/s/log/00000002.seg", encode_header(2, bytes(16), 40))
>>> manifest_from_segments(fs, "/s").segments
[[1, 1], [2, 40]]
"""

from __future__ import annotations

import re
from collections import Counter

from .errors import UNREADABLE, CorruptionError
from .format import LOG_DIR, SEGMENT_HEADER, SEGMENT_MAGIC, crc, mask_crc
from .manifest import Manifest
from .segment import HEADER_SIZE, valid_frame_after

_SEGMENT_FILE = re.compile(r"^(\d{8})\.seg$")


def manifest_from_segments(fs, root: str) -> Manifest:
    """A MANIFEST rebuilt from `root`/log: every segment file, its first LSN, the store id.

    A segment's first LSN comes from its header, or, where the header is damaged, from its
    first good frame; a segment with neither is left out (it holds nothing readable). The
    store id is the one most headers carry. Raises CorruptionError if no segment is usable.
    """
    log = f"{root}/{LOG_DIR}"
    try:
        names = fs.listdir(log)
    except UNREADABLE as exc:
        raise CorruptionError(
            f"the store at {root} has no readable MANIFEST and no readable log folder {log} "
            f"({exc.strerror or exc}); nothing can be salvaged from it",
            segment=log,
        ) from None
    segments: list[list[int]] = []
    ids: Counter[bytes] = Counter()
    for name in names:
        m = _SEGMENT_FILE.match(name)
        if m is None:
            continue
        seg_no = int(m.group(1))
        first, store_id = _first_lsn(fs, f"{log}/{name}", seg_no)
        if first is not None:
            segments.append([seg_no, first])
        if store_id is not None:
            ids[store_id] += 1
    if not segments or not ids:
        raise CorruptionError(
            f"the store at {root} has no readable MANIFEST and no readable log segment in {log}; "
            "nothing can be salvaged from it",
            segment=log,
        )
    return Manifest(store_id=ids.most_common(1)[0][0], segments=sorted(segments), index=None)


def _first_lsn(fs, path: str, seg_no: int) -> tuple[int | None, bytes | None]:
    """(first LSN, store id) of a segment file; either is None where it cannot be told."""
    try:
        head = fs.read(path, 0, HEADER_SIZE)
    except UNREADABLE:
        return None, None
    if len(head) == HEADER_SIZE:
        magic, _version, no, sid, first, c, _ = SEGMENT_HEADER.unpack_from(head)
        if magic == SEGMENT_MAGIC and no == seg_no and mask_crc(crc(head[:40])) == c:
            return first, sid
    try:
        frame = valid_frame_after(fs, path, HEADER_SIZE - 1, 1)
    except UNREADABLE:
        return None, None
    return (frame.base_lsn if frame is not None else None), None
