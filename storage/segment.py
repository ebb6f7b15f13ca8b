"""Log segments: the header that names a segment, and a scanner over its frames.

A scanner yields good frames in order and stops at the first thing that is not one, saying why
in `stop` ("end", "short", "bad" or "lsn"); deciding whether that is a torn tail or corruption
is recovery's job (invariant 3), with `valid_frame_after` as its evidence.

>>> from florql_storage.fs import MemFS
>>> from florql_storage.frame import encode_frame
>>> fs = MemFS(); fs.mkdir("/s/log")
>>> sid = bytes(16)
>>> fs.write_file("/s/log/1.seg", encode_header(1, sid, 1) + encode_frame(1, [(3, "a")]) + b"\\x07")
>>> sc = FrameScanner(fs, "/s/log/1.seg", HEADER_SIZE, 1)
>>> [(f.base_lsn, f.nrecs) for f in sc], sc.stop.reason, sc.stop.offset
([(1, 1)], 'short', 81)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import CorruptionError
from .format import FORMAT_VERSION, FRAME_HEADER, SEGMENT_HEADER, SEGMENT_MAGIC, crc, mask_crc
from .frame import Frame, parse_frame

HEADER_SIZE = SEGMENT_HEADER.size
READ_CHUNK = 8 << 20


def encode_header(seg_no: int, store_id: bytes, first_lsn: int) -> bytes:
    """The 48-byte header of segment `seg_no` whose first record will be `first_lsn`."""
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, seg_no, store_id, first_lsn, 0, 0)
    c = mask_crc(crc(head[:40]))
    return head[:40] + c.to_bytes(4, "little") + bytes(4)


def decode_header(data: bytes, path: str, seg_no: int, store_id: bytes) -> int:
    """Validate a segment header; returns its first LSN. CorruptionError if it is not ours."""
    if len(data) < HEADER_SIZE:
        raise CorruptionError(
            f"log segment {path} is shorter than its header; run `florql check` and restore the store from a backup",
            segment=path,
            offset=0,
        )
    magic, version, no, sid, first_lsn, c, _ = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC or mask_crc(crc(data[:40])) != c:
        raise CorruptionError(
            f"log segment {path} has a damaged header; run `florql check` and restore the store from a backup",
            segment=path,
            offset=0,
        )
    if no != seg_no or sid != store_id or version != FORMAT_VERSION:
        raise CorruptionError(
            f"log segment {path} belongs to another store or position (segment {no}); "
            "do not copy segment files between stores",
            segment=path,
            offset=0,
        )
    return first_lsn


class Stop(NamedTuple):
    """Why a scan ended: "end" (clean), "short" (frame runs past the end), "bad", or "lsn".

    ("unread" until the scan has run.)
    """

    reason: str
    offset: int
    lsn: int


class FrameScanner:
    """Good frames of one segment from `start`, expecting base LSN `expected_lsn` next.

    `limit` bounds the scan (a byte offset known to be a frame boundary); None reads to EOF.
    After iteration `stop` says where and why it ended, `next_lsn` is the LSN after the last
    good frame, and `seen_end` is the segment's end as this scan saw it: another process may be
    appending, so damage found later must be judged on these bytes only (a frame cut short at
    the end seen is one being written, even when the writer has finished it since).
    """

    def __init__(
        self, fs, path: str, start: int, expected_lsn: int, limit: int | None = None
    ) -> None:
        self.fs, self.path, self.start, self.limit = fs, path, start, limit
        self.next_lsn = expected_lsn
        self.stop = Stop("unread", start, expected_lsn)
        self.seen_end: int | None = None

    def __iter__(self):
        pos = self.start
        limit = self.limit
        while True:
            want = READ_CHUNK if limit is None else min(READ_CHUNK, limit - pos)
            buf = self.fs.read(self.path, pos, want) if want > 0 else b""
            at_eof = len(buf) < want or (limit is not None and pos + len(buf) >= limit)
            if at_eof:
                self.seen_end = pos + len(buf)
            if not buf:
                self.stop = Stop("end", pos, self.next_lsn)
                return
            local = 0
            while True:
                f = parse_frame(buf, local, len(buf))
                if f.status == "short":
                    if local == len(buf) and at_eof:
                        self.stop = Stop("end", pos + local, self.next_lsn)
                        return
                    if at_eof:
                        self.stop = Stop("short", pos + local, self.next_lsn)
                        return
                    if local == 0 and f.end > len(buf):
                        # One frame bigger than a chunk: read exactly it.
                        buf = self.fs.read(self.path, pos, f.end)
                        at_eof = len(buf) < f.end
                        if at_eof:
                            self.seen_end = pos + len(buf)
                        continue
                    break
                if f.status == "bad":
                    self.stop = Stop("bad", pos + local, self.next_lsn)
                    return
                if f.base_lsn != self.next_lsn:
                    self.stop = Stop("lsn", pos + local, self.next_lsn)
                    return
                yield f._replace(offset=pos + local, end=pos + f.end)
                self.next_lsn += f.nrecs
                local = f.end
            pos += local


def valid_frame_after(
    fs,
    path: str,
    offset: int,
    next_lsn: int,
    *,
    later_flush: bool = False,
    end: int | None = None,
) -> Frame | None:
    """A good frame starting after `offset` whose LSNs could follow `next_lsn`, if any.

    With `later_flush`, only a frame written by a later flush than the one that would hold
    `next_lsn` counts: the evidence that the damaged frame had been fsynced (invariant 3).
    Used only on damage. Candidates are found with NumPy by their base-LSN field, then
    confirmed by checksum. `end` bounds the search to the bytes a scan saw (`seen_end`).
    """
    data = fs.read(path, offset + 1, None if end is None else max(0, end - offset - 1))
    n = len(data)
    if n < FRAME_HEADER.size:
        return None
    lsn_at = 12  # byte offset of base_lsn inside a frame header
    lo, hi = next_lsn, next_lsn + (1 << 32)
    candidates = []
    for shift in range(8):
        start = lsn_at + shift
        count = (n - start) // 8
        if count <= 0:
            continue
        vals = np.frombuffer(data, dtype="<u8", count=count, offset=start)
        hits = np.nonzero((vals >= lo) & (vals < hi))[0]
        candidates.extend((start + hits * 8 - lsn_at).tolist())
    # Nearest first: a resynchronising reader must lose no good frame after the damage.
    for p in sorted(candidates):
        f = parse_frame(data, p, n)
        if f.status == "ok" and (not later_flush or f.group_lsn > next_lsn):
            return f._replace(offset=offset + 1 + p, end=offset + 1 + f.end)
    return None
