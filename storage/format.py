"""Constants and byte layouts shared by the writer and the reader (see FORMAT.md).

>>> mask_crc(unmask_crc(0x12345678)) == 0x12345678
True
>>> FRAME_HEADER.size, SEGMENT_HEADER.size, PAGE_HEADER.size
(28, 48, 40)
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

FORMAT_VERSION = 1

MANIFEST = "MANIFEST"
MANIFEST_TMP = "MANIFEST.tmp"
LOCK = "LOCK"
LOG_DIR = "log"
PAGES_DIR = "pages"
INDEX_DIR = "index"
RUNS_DIR = "runs"
QUARANTINE_DIR = "quarantine"

SEGMENT_MAGIC = b"FLQLSEG\0"
MANIFEST_MAGIC = b"FLQLMAN\0"
INDEX_MAGIC = b"FLQLIDX\0"
PAGE_MAGIC = b"FQPG"

# magic, version, seg_no, store_id, first_lsn, crc, reserved
SEGMENT_HEADER = struct.Struct("<8sII16sQII")
# crc, length, type, flags, reserved, base_lsn, count, group (base_lsn - first LSN of its flush)
FRAME_HEADER = struct.Struct("<IIBBHQII")
# magic, version, length, crc, reserved (MANIFEST and index files)
FILE_HEADER = struct.Struct("<8sIIII")
# magic, codec, reserved(3), raw_len, stored_len, crc (of stored data), raw_crc, reserved
PAGE_HEADER = struct.Struct("<4sB3xIIII16x")

FRAME_RECORDS = 1
# A hole: `count` LSNs whose records were lost to damage and cut out by `florql check --repair`.
FRAME_HOLE = 2
FLAG_LZ4 = 1

CODEC_RAW = 0
CODEC_LZ4 = 1

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_PAGE_BYTES = 1 << 20
DEFAULT_INDEX_INTERVAL = 8 << 20
DEFAULT_INDEX_RECORDS = 50_000
SPARSE_INDEX_STEP = 256 << 10
# Frames are cut at about this many payload bytes unless an atomic group needs more.
FRAME_TARGET_BYTES = 1 << 20
# Payloads at least this long are tried with lz4; kept compressed if that saves >= 1/8.
COMPRESS_MIN_BYTES = 512

_MASK_DELTA = 0xA282EAD8


def crc(data, value: int = 0) -> int:
    """CRC32C of a buffer, continuing from `value`."""
    return _crc32c.crc32c(data, value)


def mask_crc(c: int) -> int:
    """Mask a CRC as LevelDB does, so CRCs of data containing CRCs stay strong."""
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(m: int) -> int:
    """Inverse of `mask_crc`."""
    r = (m - _MASK_DELTA) & 0xFFFFFFFF
    return ((r >> 17) | (r << 15)) & 0xFFFFFFFF


def segment_name(seg_no: int) -> str:
    """The path of log segment `seg_no`, relative to the store.

    >>> segment_name(3)
    'log/00000003.seg'
    """
    return f"{LOG_DIR}/{seg_no:08d}.seg"
