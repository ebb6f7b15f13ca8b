"""The bad-input catalogue: each case is a clear error naming the path and the fix, and the
store's bytes are unchanged afterwards."""

from __future__ import annotations

import os
import stat

import msgpack
import pytest
from florql_storage import BadInputError, CorruptionError, Store, StoreError, kinds
from florql_storage.format import FILE_HEADER, MANIFEST
from florql_storage.fs import MemFS, RealFS
from florql_storage.manifest import seal

from .conftest import value


def snapshot(fs, root: str) -> dict:
    """Every file under root with its bytes."""
    out = {}
    stack = [root]
    while stack:
        d = stack.pop()
        for name in fs.listdir(d):
            p = f"{d}/{name}"
            if fs.isdir(p):
                stack.append(p)
            else:
                out[p] = fs.read(p)
    return out


def _store_with_data(fscase):
    s = fscase.open()
    w = s.writer()
    w.begin_run("r1", {})
    w.append(kinds.VALUE, value(1))
    w.flush()
    w.write_checkpoint("r1", {}, [b"abc" * 100])
    w.close()
    s.close()


def test_store_path_that_is_a_file(fscase):
    fscase.fs.mkdir(fscase.root.rsplit("/", 1)[0] or "/")
    fscase.fs.write_file(fscase.root, b"not a store")
    with pytest.raises(StoreError, match="is a file, not a folder") as err:
        fscase.open()
    assert fscase.root in str(err.value)
    assert fscase.fs.read(fscase.root) == b"not a store"


def test_missing_path_without_create(fscase):
    with pytest.raises(StoreError, match="no florql store") as err:
        Store.open(fscase.root, create=False, fs=fscase.fs)
    assert fscase.root in str(err.value) and "--store" in str(err.value)
    assert not fscase.fs.exists(fscase.root)


def test_store_from_a_newer_format_version(fscase):
    _store_with_data(fscase)
    path = fscase.path(MANIFEST)
    # A newer florql writes its version in the header and its format in the body.
    body = msgpack.unpackb(fscase.fs.read(path)[FILE_HEADER.size :], raw=False)
    data = bytearray(seal(b"FLQLMAN\0", {**body, "format": 99}))
    FILE_HEADER.pack_into(data, 0, b"FLQLMAN\0", 99, *FILE_HEADER.unpack_from(data)[2:])
    fscase.fs.write_file(path, bytes(data))
    before = snapshot(fscase.fs, fscase.root)
    with pytest.raises(StoreError, match="newer") as err:
        fscase.open()
    assert not isinstance(err.value, CorruptionError) and "upgrade florql" in str(err.value)
    assert snapshot(fscase.fs, fscase.root) == before


def test_a_flipped_version_byte_is_damage_not_a_newer_format(fscase):
    """The checksum covers the body only; a body that says format 1 under a header that says
    99 is a damaged header, which `--repair` can rebuild (a newer store is never repaired)."""
    _store_with_data(fscase)
    path = fscase.path(MANIFEST)
    data = bytearray(fscase.fs.read(path))
    FILE_HEADER.pack_into(data, 0, b"FLQLMAN\0", 99, *FILE_HEADER.unpack_from(data)[2:])
    fscase.fs.write_file(path, bytes(data))
    with pytest.raises(CorruptionError, match="damaged header"):
        fscase.open()


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty"])
def test_truncated_or_garbled_manifest(fscase, damage):
    _store_with_data(fscase)
    path = fscase.path(MANIFEST)
    data = fscase.fs.read(path)
    bad = {
        "truncate": data[: len(data) // 2],
        "garble": data[:30] + b"\x00" * (len(data) - 30),
        "empty": b"",
    }[damage]
    fscase.fs.write_file(path, bad)
    before = snapshot(fscase.fs, fscase.root)
    with pytest.raises(CorruptionError) as err:
        fscase.open()
    assert path in str(err.value) and err.value.segment == path
    assert snapshot(fscase.fs, fscase.root) == before


def test_foreign_file_in_the_store_folder(fscase):
    _store_with_data(fscase)
    fscase.fs.write_file(fscase.path("notes.txt"), b"hello")
    before = snapshot(fscase.fs, fscase.root)
    with pytest.raises(StoreError, match="notes.txt") as err:
        fscase.open()
    assert "move it out" in str(err.value)
    assert snapshot(fscase.fs, fscase.root) == before


def test_folder_with_other_files_is_not_made_a_store(fscase):
    fscase.fs.mkdir(fscase.root)
    fscase.fs.write_file(fscase.path("thesis.tex"), b"precious")
    with pytest.raises(StoreError, match="not a florql store"):
        fscase.open()
    assert fscase.fs.listdir(fscase.root) == ["thesis.tex"]


def test_missing_manifest_with_data_is_not_overwritten(fscase):
    _store_with_data(fscase)
    fscase.fs.remove(fscase.path(MANIFEST))
    before = snapshot(fscase.fs, fscase.root)
    with pytest.raises(CorruptionError, match="no MANIFEST"):
        fscase.open()
    assert snapshot(fscase.fs, fscase.root) == before


def test_unwritable_folder_mem():
    fs = MemFS()
    fs.mkdir("/ro")
    fs.read_only_dirs.add("/ro")
    with pytest.raises(StoreError, match="not a writable folder") as err:
        Store.open("/ro/store", fs=fs)
    assert "/ro" in str(err.value)
    assert fs.listdir("/ro") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StoreError, match="writable"):
            Store.open(str(ro / "store"), fs=RealFS())
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(stat.S_IRWXU)


def test_read_only_store_opens_for_reading_but_refuses_a_writer():
    fs = MemFS()
    s = Store.open("/s", fs=fs)
    w = s.writer()
    w.append(kinds.VALUE, value(1))
    w.flush()
    fs.read_only_dirs.update({"/s", "/s/log"})
    again = Store.open("/s", fs=fs)
    assert [r.body for r in again.scan()] == [value(1)]
    with pytest.raises(StoreError, match="read-only"):
        again.writer()


def test_bad_kinds_and_bodies_are_refused_and_neighbours_survive(fscase):
    s = fscase.open()
    w = s.writer()
    with pytest.raises(BadInputError):
        w.append(kinds.CKPT_END, {})
    with pytest.raises(BadInputError):
        w.append("3", [])
    w.append(kinds.VALUE, value(1))
    w.append(kinds.VALUE, ["r1", 2, "x", object(), [], 0.0, ""])
    w.append(kinds.VALUE, value(3))
    with pytest.raises(BadInputError, match="msgpack"):
        w.flush()
    w.append_many([(kinds.VALUE, value(4)), (kinds.VALUE, {1j: 2})], atomic=True)
    with pytest.raises(BadInputError):
        w.flush()
    assert [r.body for r in fscase.open().scan()] == [value(1), value(3)]


def test_run_lifecycle_misuse(fscase):
    s = fscase.open()
    w = s.writer()
    w.begin_run("r1", {})
    with pytest.raises(BadInputError, match="already exists"):
        w.begin_run("r1", {})
    with pytest.raises(BadInputError, match="non-empty string"):
        w.begin_run("", {})
    with pytest.raises(BadInputError, match="not in the store"):
        w.resume_run("nope", {})
    other = fscase.open().writer()
    with pytest.raises(StoreError, match="another process"):
        other.resume_run("r1", {})
    w.end_run("r1", "finished", {})
    with pytest.raises(BadInputError, match="already ended"):
        other.resume_run("r1", {})
    with pytest.raises(BadInputError, match="not in the store"):
        s.load_checkpoint("ck-none")


@pytest.mark.parametrize(
    "body",
    [
        {"format": 1, "store_id": bytes(16), "segments": [], "index": None},
        {"format": 1, "store_id": bytes(3), "segments": [[1, 1]], "index": None},
        {"format": 1, "store_id": bytes(16), "segments": [[1, 1]], "index": {"file": 7}},
        {"format": 1, "store_id": bytes(16), "segments": [["a", 1]], "index": None},
        {"store_id": bytes(16), "segments": [[1, 1]], "index": None},
    ],
)
def test_manifest_with_a_valid_checksum_but_malformed_fields(fscase, body):
    from florql_storage.manifest import seal

    _store_with_data(fscase)
    path = fscase.path(MANIFEST)
    fscase.fs.write_file(path, seal(b"FLQLMAN\0", body))
    before = snapshot(fscase.fs, fscase.root)
    with pytest.raises(CorruptionError, match="malformed"):
        fscase.open()
    assert snapshot(fscase.fs, fscase.root) == before


def test_bad_meta_is_refused_before_any_page_is_written(fscase):
    s = fscase.open()
    w = s.writer()
    with pytest.raises(BadInputError, match="checkpoint meta"):
        w.write_checkpoint("r", {"obj": object()}, [b"x" * 10_000])
    with pytest.raises(BadInputError, match="run meta must be a dict"):
        w.begin_run("r", ["not", "a", "dict"])
    assert fscase.fs.listdir(fscase.path("pages")) == []
    assert s.checkpoints() == [] and s.runs() == {}


def test_a_write_failure_is_a_store_error_naming_the_store_and_the_fix():
    from florql_storage.fs import FaultyFS

    fs = FaultyFS()
    s = Store.open("/s", fs=fs)
    w = s.writer()
    w.append(kinds.VALUE, value(1))
    fs.fail_at = fs.ops + 1
    with pytest.raises(StoreError, match="could not write to the store at /s") as err:
        w.flush()
    assert "free disk space" in str(err.value)
    fs2 = FaultyFS()
    w2 = Store.open("/s", fs=fs2).writer()
    fs2.fail_at = fs2.ops + 1  # the first page write
    with pytest.raises(StoreError, match="could not write"):
        w2.write_checkpoint("r", {}, [b"x" * 100])
