"""The bytes on disk are what storage/FORMAT.md says they are."""

from __future__ import annotations

import crc32c
from florql_storage.format import FRAME_HEADER, mask_crc, unmask_crc
from florql_storage.frame import encode_frame, parse_frame
from florql_storage.segment import HEADER_SIZE, encode_header

WORKED = [(3, ["r1", 1, "loss", 0.5, [], 0.0, ""]), (4, ["r1", 2, "epoch", [["epoch", 0, 0]], 0.0])]


def test_worked_example_frame_has_the_documented_bytes():
    frame = encode_frame(1, WORKED)
    assert frame[:28].hex(" ") == (
        "6e 92 ac e4 41 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00"
    )
    assert len(frame) == 93 and frame[28] == 0x92
    assert HEADER_SIZE + len(frame) == 141  # the next frame's offset in the example


def test_frame_crc_covers_header_fields_and_payload_masked_like_leveldb():
    frame = encode_frame(1, WORKED)
    stored = int.from_bytes(frame[:4], "little")
    assert unmask_crc(stored) == crc32c.crc32c(frame[4:])
    assert mask_crc(unmask_crc(stored)) == stored


def test_big_compressible_payload_is_lz4_flagged_and_round_trips():
    entries = [(3, ["run", i, "loss", 0.0, [], 0.0, ""]) for i in range(1000)]
    frame = encode_frame(10, entries)
    _crc, length, _t, flags, _r, base, count, group = FRAME_HEADER.unpack_from(frame)
    assert group == 0
    assert flags & 1 and length < 10_000 and (base, count) == (10, 1000)
    f = parse_frame(frame, 0, len(frame))
    from florql_storage.frame import decode_records

    assert [r.body for r in decode_records(f)] == [list(e[1]) for e in entries]


def test_segment_header_is_48_bytes_with_magic_and_first_lsn():
    head = encode_header(7, bytes(range(16)), 1234)
    assert len(head) == 48 and head[:8] == b"FLQLSEG\0"
    assert int.from_bytes(head[16:32], "big") == int.from_bytes(bytes(range(16)), "big")
    assert int.from_bytes(head[32:40], "little") == 1234


def test_every_single_byte_change_of_a_frame_is_detected():
    # Invariant 2: a frame is wholly valid or not at all.
    frame = bytearray(encode_frame(1, WORKED))
    for i in range(len(frame)):
        for delta in (1, 0x80):
            bad = bytearray(frame)
            bad[i] = (bad[i] + delta) % 256
            f = parse_frame(bytes(bad), 0, len(bad))
            assert f.status != "ok" or f.base_lsn != 1 or f.count != 2, i
