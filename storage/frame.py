"""Record framing: a frame is one group commit of N logical records (see FORMAT.md, "Log segments").

>>> data = encode_frame(7, [(3, ["r", 1, "loss", 0.5, [], 0.0, ""]), (4, ["r", 2, "step", [], 0.0])])
>>> f = parse_frame(data, 0, len(data))
>>> f.status, f.base_lsn, f.nrecs, f.end == len(data)
('ok', 7, 2, True)
>>> decode_records(f)
[Record(lsn=7, kind=3, body=['r', 1, 'loss', 0.5, [], 0.0, '']), Record(lsn=8, kind=4, body=['r', 2, 'step', [], 0.0])]
>>> parse_frame(data[:-1], 0, len(data) - 1).status     # incomplete: maybe a torn tail
'short'
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any, NamedTuple

import lz4.block
import msgpack

from .errors import BadInputError
from .format import (
    COMPRESS_MIN_BYTES,
    FLAG_LZ4,
    FRAME_HEADER,
    FRAME_HOLE,
    FRAME_RECORDS,
    crc,
    mask_crc,
)
from .records import Record

HEADER_SIZE = FRAME_HEADER.size


def pack_entries(entries) -> bytes:
    """msgpack of [[kind, body], ...]; BadInputError names the first body msgpack cannot encode."""
    try:
        return msgpack.packb(entries, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        for kind, body in entries:
            check_packable(f"a record of kind {kind}", body)
        raise


def check_packable(what: str, value) -> None:
    """BadInputError naming `what` unless msgpack can store `value` (no ext types, no pickle)."""
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadInputError(
            f"{what} holds a value msgpack cannot store ({exc}); use only dict, list, str, "
            "bytes, int, float, bool and None"
        ) from None


def encode_frame(base_lsn: int, entries) -> bytes:
    """One frame holding `entries` ([(kind, body), ...]) with LSNs from `base_lsn`."""
    return encode_payload(base_lsn, len(entries), pack_entries(entries))


def encode_payload(base_lsn: int, count: int, payload: bytes, group: int = 0) -> bytes:
    """Frame an already packed payload, compressing it when that saves at least an eighth.

    `group` is how far `base_lsn` lies past the first LSN of the flush this frame belongs to:
    recovery uses it to tell a torn multi-frame flush from corruption (recovery.py, invariant 3).
    """
    flags = 0
    if len(payload) >= COMPRESS_MIN_BYTES:
        packed = lz4.block.compress(payload, store_size=True)
        if len(packed) <= len(payload) - len(payload) // 8:
            payload, flags = packed, FLAG_LZ4
    header = bytearray(
        FRAME_HEADER.pack(0, len(payload), FRAME_RECORDS, flags, 0, base_lsn, count, group)
    )
    c = crc(payload, crc(memoryview(header)[4:]))
    header[0:4] = mask_crc(c).to_bytes(4, "little")
    return bytes(header) + payload


class Frame(NamedTuple):
    """A parsed frame header. `status`: "ok", "short" (ends past `limit`) or "bad" (checksum)."""

    status: str
    offset: int
    end: int
    base_lsn: int
    nrecs: int
    flags: int
    payload: memoryview | None
    group_lsn: int = 0  # first LSN of the flush that wrote this frame
    hole: bool = False  # a FRAME_HOLE: its LSNs were lost to damage; it holds no records


def parse_frame(buf, pos: int, limit: int) -> Frame:
    """The frame starting at `buf[pos]`, which holds valid data up to `limit`."""
    if limit - pos < HEADER_SIZE:
        return Frame("short", pos, limit, 0, 0, 0, None)
    masked, length, ftype, flags, _rsv, base_lsn, count, group = FRAME_HEADER.unpack_from(buf, pos)
    end = pos + HEADER_SIZE + length
    if end > limit:
        return Frame("short", pos, end, base_lsn, count, flags, None)
    view = memoryview(buf)
    c = crc(view[pos + HEADER_SIZE : end], crc(view[pos + 4 : pos + HEADER_SIZE]))
    if (
        mask_crc(c) != masked
        or ftype not in (FRAME_RECORDS, FRAME_HOLE)
        or count == 0
        or group >= base_lsn
    ):
        return Frame("bad", pos, end, base_lsn, count, flags, None)
    payload = view[pos + HEADER_SIZE : end]
    return Frame(
        "ok", pos, end, base_lsn, count, flags, payload, base_lsn - group, ftype == FRAME_HOLE
    )


def encode_hole(first_lsn: int, last_lsn: int, note: dict) -> bytes:
    """A hole frame standing for LSNs first_lsn..last_lsn, lost to damage (see FORMAT.md).

    It keeps LSNs dense (invariant 1) where a repair cut damaged bytes out; `note` (msgpack)
    says where the bytes went. A hole is its own flush (group 0).

    >>> f = parse_frame(encode_hole(5, 9, {"q": "x"}), 0, 10**6)
    >>> f.status, f.hole, f.base_lsn, f.nrecs
    ('ok', True, 5, 5)
    """
    payload = msgpack.packb(note, use_bin_type=True)
    header = bytearray(
        FRAME_HEADER.pack(0, len(payload), FRAME_HOLE, 0, 0, first_lsn, last_lsn - first_lsn + 1, 0)
    )
    c = crc(payload, crc(memoryview(header)[4:]))
    header[0:4] = mask_crc(c).to_bytes(4, "little")
    return bytes(header) + payload


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while decoding.

    Decoding a frame allocates many small containers; each allocation burst would trigger
    collections that scan every live object, which measured 2-4x slower decoding here.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decode_entries(frame: Frame, use_list: bool = True) -> Any:
    """The [[kind, body], ...] list of a good frame.

    With `use_list=False` every msgpack array decodes as a tuple instead (the outer one too),
    which is ~25% cheaper to build and free and makes loop contexts hashable as they are.
    """
    payload = frame.payload
    if frame.flags & FLAG_LZ4:
        payload = lz4.block.decompress(payload)
    # gc_paused inlined: its generator-based context manager costs ~2 us per frame, which
    # shows on logs of many small frames.
    was = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=use_list)
    finally:
        if was:
            gc.enable()


_new = tuple.__new__


def decode_records(frame: Frame) -> list[Record]:
    """The logical records of a good frame, with their LSNs."""
    base = frame.base_lsn
    entries = decode_entries(frame)
    with gc_paused():
        return [_new(Record, (base + i, e[0], e[1])) for i, e in enumerate(entries)]
