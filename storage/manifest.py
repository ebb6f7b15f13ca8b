"""The MANIFEST and index-checkpoint files: a checksummed msgpack body behind a magic header.

The MANIFEST is replaced atomically (tmp, fsync, rename, fsync folder), so a reader sees the old
one or the new one, never a mix.

>>> from florql_storage.fs import MemFS
>>> fs = MemFS(); fs.mkdir("/s")
>>> m = Manifest(store_id=bytes(16), segments=[[1, 1]], index=None)
>>> write_manifest(fs, "/s", m)
>>> read_manifest(fs, "/s").segments
[[1, 1]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from .errors import UNREADABLE, CorruptionError, StoreError, unreadable
from .format import (
    FILE_HEADER,
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_MAGIC,
    MANIFEST_TMP,
    crc,
    mask_crc,
)


def seal(magic: bytes, body) -> bytes:
    """Header (magic, version, length, CRC) + msgpack(body)."""
    data = msgpack.packb(body, use_bin_type=True)
    return FILE_HEADER.pack(magic, FORMAT_VERSION, len(data), mask_crc(crc(data)), 0) + data


def unseal(magic: bytes, data: bytes, path: str, what: str):
    """The body of a sealed file; StoreError for a newer format, CorruptionError if damaged."""
    fix = "run `florql check --repair` to rebuild it from the log segments"
    if len(data) < FILE_HEADER.size:
        raise CorruptionError(
            f"{what} {path} is truncated ({len(data)} bytes); {fix}", segment=path, offset=0
        )
    got_magic, version, length, c, _ = FILE_HEADER.unpack_from(data)
    if got_magic != magic:
        raise CorruptionError(
            f"{what} {path} is not a florql {what} (bad magic); {fix}", segment=path, offset=0
        )
    body = memoryview(data)[FILE_HEADER.size :]
    intact = len(body) == length and mask_crc(crc(body)) == c
    if version > FORMAT_VERSION and not _says_ours(body if intact else None):
        raise StoreError(
            f"the store at {path} uses format version {version}, newer than this florql "
            f"understands ({FORMAT_VERSION}); upgrade florql to open it"
        )
    if version > FORMAT_VERSION:  # the checksum does not cover the header: a flipped version
        raise CorruptionError(
            f"{what} {path} has a damaged header (version {version}, but its body is format "
            f"{FORMAT_VERSION}); {fix}",
            segment=path,
            offset=0,
        )
    if not intact:
        raise CorruptionError(f"{what} {path} fails its checksum; {fix}", segment=path, offset=0)
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptionError(
            f"{what} {path} cannot be decoded ({exc}); {fix}", segment=path, offset=0
        ) from None


def _says_ours(body) -> bool:
    """Whether an intact body declares a format this florql reads (the MANIFEST's `format`)."""
    if body is None:
        return False
    try:
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return False
    fmt = decoded.get("format") if isinstance(decoded, dict) else None
    return type(fmt) is int and fmt <= FORMAT_VERSION


@dataclass
class Manifest:
    """What the MANIFEST says: the store's id, its log segments, and the latest index checkpoint."""

    store_id: bytes
    segments: list = field(default_factory=list)  # [[seg_no, first_lsn], ...]
    index: dict | None = None  # {"file", "lsn", "seg_no", "offset"}
    format: int = FORMAT_VERSION


def read_manifest(fs, root: str) -> Manifest:
    """Read and validate `root`/MANIFEST."""
    path = f"{root}/{MANIFEST}"
    try:
        data = fs.read(path)
    except UNREADABLE as exc:
        raise unreadable(path, exc, "manifest") from None
    body = unseal(MANIFEST_MAGIC, data, path, "manifest")
    try:
        m = Manifest(
            store_id=bytes(body["store_id"]), segments=list(body["segments"]), index=body["index"]
        )
        m.format = int(body["format"])
        _validate(m)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(
            f"manifest {path} has missing or malformed fields ({exc}); restore the store from a backup",
            segment=path,
            offset=0,
        ) from None
    return m


def _validate(m: Manifest) -> None:
    """Raise ValueError unless the fields have the shapes the rest of storage relies on."""
    if len(m.store_id) != 16:
        raise ValueError("store_id is not 16 bytes")
    if not m.segments:
        raise ValueError("no log segments")
    for seg in m.segments:
        if len(seg) != 2 or not all(type(x) is int and x > 0 for x in seg):
            raise ValueError(f"bad segment entry {seg!r}")
    idx = m.index
    if idx is not None:
        if not isinstance(idx, dict) or type(idx.get("file")) is not str:
            raise ValueError("bad index entry")
        if not all(type(idx.get(k)) is int for k in ("lsn", "seg_no", "offset")):
            raise ValueError("bad index entry")


def write_manifest(fs, root: str, m: Manifest) -> None:
    """Replace `root`/MANIFEST atomically and durably."""
    body = {"format": m.format, "store_id": m.store_id, "segments": m.segments, "index": m.index}
    tmp = f"{root}/{MANIFEST_TMP}"
    fs.write_file(tmp, seal(MANIFEST_MAGIC, body))
    fs.fsync(tmp)
    fs.rename(tmp, f"{root}/{MANIFEST}")
    fs.fsync_dir(root)
