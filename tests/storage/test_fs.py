"""The file-system interface: MemFS's crash model, FaultyFS's failure point, RealFS locks."""

from __future__ import annotations

import pytest
from florql_storage.fs import FaultyFS, InjectedFault, MemFS, RealFS


def _durable_dir(fs: MemFS, path: str) -> None:
    fs.mkdir(path)
    fs.fsync_dir("/")


def test_memfs_drop_keeps_exactly_the_synced_prefix():
    fs = MemFS()
    _durable_dir(fs, "/d")
    h = fs.open_append("/d/f")
    h.write(b"abc")
    h.fsync()
    fs.fsync_dir("/d")
    h.write(b"def")
    assert fs.crash("drop").read("/d/f") == b"abc"
    assert fs.crash("keep").read("/d/f") == b"abcdef"


def test_memfs_garble_keeps_synced_bytes_and_may_change_the_rest():
    fs = MemFS()
    _durable_dir(fs, "/d")
    h = fs.open_append("/d/f")
    h.write(b"x" * 100)
    h.fsync()
    fs.fsync_dir("/d")
    h.write(b"y" * 1000)
    outs = {fs.crash("garble", seed=s).read("/d/f") for s in range(20)}
    assert all(o.startswith(b"x" * 100) and len(o) <= 1100 for o in outs)
    assert len(outs) > 1


def test_memfs_rename_is_durable_only_after_folder_fsync():
    fs = MemFS()
    _durable_dir(fs, "/d")
    fs.write_file("/d/a", b"old")
    fs.fsync("/d/a")
    fs.fsync_dir("/d")
    fs.write_file("/d/tmp", b"new")
    fs.fsync("/d/tmp")
    fs.rename("/d/tmp", "/d/a")
    assert fs.crash("drop").read("/d/a") == b"old"
    fs.fsync_dir("/d")
    assert fs.crash("drop").read("/d/a") == b"new"


def test_faultyfs_fails_at_operation_n_and_after():
    fs = FaultyFS(fail_at=3)
    fs.mkdir("/d")  # 1
    h = fs.open_append("/d/f")  # 2
    with pytest.raises(InjectedFault):
        h.write(b"0123456789")  # 3: torn, half of it lands
    with pytest.raises(InjectedFault):
        fs.fsync("/d/f")
    assert fs.base.read("/d/f") == b"01234"


@pytest.mark.parametrize("kind", ["mem", "real"])
def test_lock_is_exclusive_and_probe_sees_holder(kind, tmp_path):
    fs = MemFS() if kind == "mem" else RealFS()
    root = "/l" if kind == "mem" else str(tmp_path)
    fs.mkdir(root)
    path = f"{root}/x.lock"
    assert not fs.is_locked(path)
    held = fs.lock(path)
    assert fs.is_locked(path)
    assert fs.lock(path, blocking=False) is None
    held.release()
    assert not fs.is_locked(path)
    again = fs.lock(path, blocking=False)
    assert again is not None
    again.release()


def test_is_locked_never_creates_the_file(tmp_path):
    fs = RealFS()
    assert not fs.is_locked(str(tmp_path / "missing.lock"))
    assert not (tmp_path / "missing.lock").exists()
