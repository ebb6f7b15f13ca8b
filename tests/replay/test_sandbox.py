"""The replay sandbox: replayed code writes to a scratch area and reads its own writes, and the
real folder is left byte for byte as it was (florql/replay/overlay.py, sandbox.py).

Each test works in a `user` folder holding files "the recording left", runs file calls inside
a Sandbox, checks what the code inside saw, and checks afterwards that `user` is unchanged.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from florql.replay.overlay import Overlay
from florql.replay.sandbox import Sandbox
from tests.replay.conftest import env


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: its content hash ('dir' for folders)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def user(tmp_path: Path):
    """A user's folder with a few files; yields it and asserts it is unchanged afterwards."""
    folder = tmp_path / "user"
    (folder / "out" / "sub").mkdir(parents=True)
    (folder / "out" / "model.pt").write_bytes(b"recorded model")
    (folder / "out" / "log.csv").write_text("epoch,val\n0,1.0\n")
    (folder / "out" / "sub" / "deep.txt").write_text("deep")
    (folder / "notes.txt").write_text("keep me")
    before = _snapshot(folder)
    yield folder
    assert _snapshot(folder) == before, "the sandbox changed the user's folder"


@pytest.fixture
def box(tmp_path: Path):
    scratch = tmp_path / "scratch"
    with Sandbox(str(scratch)) as b:
        yield b
    assert not scratch.exists(), "the scratch area is removed on exit"


def test_a_write_lands_in_scratch_and_reads_see_it(user, box) -> None:
    with open(user / "out" / "model.pt", "wb") as f:
        f.write(b"replayed model")
    assert (user / "out" / "model.pt").read_bytes() == b"replayed model"
    assert os.path.getsize(user / "out" / "model.pt") == len(b"replayed model")
    new = user / "out" / "new.txt"
    new.write_text("fresh")
    assert new.exists() and new.is_file() and os.path.isfile(new) and new.read_text() == "fresh"
    assert (user / "notes.txt").read_text() == "keep me"  # untouched files read through


def test_append_copies_the_real_file_first(user, box) -> None:
    with open(user / "out" / "log.csv", "a") as f:
        f.write("1,0.5\n")
    assert (user / "out" / "log.csv").read_text() == "epoch,val\n0,1.0\n1,0.5\n"
    with open(user / "notes.txt", "r+") as f:
        f.write("KEEP")
    assert (user / "notes.txt").read_text() == "KEEP me"


def test_a_delete_is_a_whiteout_that_reads_exists_and_listings_respect(user, box) -> None:
    os.remove(user / "out" / "model.pt")
    assert not (user / "out" / "model.pt").exists()
    assert not os.path.exists(user / "out" / "model.pt")
    with pytest.raises(FileNotFoundError):
        (user / "out" / "model.pt").read_bytes()
    assert sorted(os.listdir(user / "out")) == ["log.csv", "sub"]
    with pytest.raises(FileNotFoundError):
        os.remove(user / "out" / "model.pt")
    (user / "out" / "model.pt").write_bytes(b"again")  # re-created: the replay's version
    assert (user / "out" / "model.pt").read_bytes() == b"again"


def test_listings_merge_real_and_scratch_entries(user, box) -> None:
    (user / "out" / "best.pt").write_bytes(b"b")
    (user / "out" / "sub" / "x.npy").write_bytes(b"x")
    assert sorted(os.listdir(user / "out")) == ["best.pt", "log.csv", "model.pt", "sub"]
    with os.scandir(user / "out") as it:
        entries = {e.name: e for e in it}
    assert entries["best.pt"].is_file() and entries["sub"].is_dir()
    assert entries["best.pt"].path == os.path.join(user / "out", "best.pt")
    assert entries["best.pt"].stat().st_size == 1
    assert sorted(p.name for p in (user / "out").iterdir()) == sorted(entries)
    assert sorted(Path(p).name for p in glob.glob(str(user / "out" / "*.pt"))) == [
        "best.pt",
        "model.pt",
    ]
    walked = {
        os.path.relpath(os.path.join(d, f), user) for d, _, fs in os.walk(user / "out") for f in fs
    }
    assert walked == {
        "out/best.pt",
        "out/log.csv",
        "out/model.pt",
        "out/sub/deep.txt",
        "out/sub/x.npy",
    }


def test_rename_and_replace_move_within_the_replays_view(user, box) -> None:
    tmp = user / "out" / "model.pt.tmp"
    tmp.write_bytes(b"atomic")
    os.replace(tmp, user / "out" / "model.pt")  # the save-then-rename idiom
    assert not tmp.exists() and (user / "out" / "model.pt").read_bytes() == b"atomic"
    os.rename(user / "notes.txt", user / "notes.bak")  # a real file: copied, then whited out
    assert not (user / "notes.txt").exists() and (user / "notes.bak").read_text() == "keep me"
    shutil.move(str(user / "out" / "sub"), str(user / "moved"))  # a real folder, merged
    assert not (user / "out" / "sub").exists()
    assert (user / "moved" / "deep.txt").read_text() == "deep"


def test_rmtree_then_makedirs_hides_the_real_contents(user, box) -> None:
    shutil.rmtree(user / "out")
    assert not (user / "out").exists()
    with pytest.raises(FileNotFoundError):
        (user / "out" / "x.txt").write_text("x")  # its folder is gone for the replay
    os.makedirs(user / "out" / "sub", exist_ok=True)
    assert os.listdir(user / "out") == ["sub"] and os.listdir(user / "out" / "sub") == []
    assert not (user / "out" / "log.csv").exists()
    shutil.rmtree(user / "nope", ignore_errors=True)
    with pytest.raises(FileNotFoundError):
        shutil.rmtree(user / "nope")


def test_a_folder_made_by_the_replay_can_be_made_current(user, box) -> None:
    # Hydra-style: make a run folder, change into it, write relative paths there.
    saved = os.getcwd()
    os.chdir(user)
    try:
        os.makedirs("outputs/run1")
        os.chdir("outputs/run1")
        Path("metrics.txt").write_text("0.5")
        assert Path("metrics.txt").read_text() == "0.5" and os.listdir(".") == ["metrics.txt"]
        assert Path("../../notes.txt").read_text() == "keep me"  # a real file, by a relative path
        with open("../../out/log.csv", "a") as f:  # appended in the replay's copy
            f.write("1,0.5\n")
        os.chdir("../..")
        assert Path("outputs/run1/metrics.txt").read_text() == "0.5"
        assert Path("out/log.csv").read_text().endswith("1,0.5\n")
        with pytest.raises(FileNotFoundError):
            os.chdir("no-such-folder")
    finally:
        os.chdir(saved)


def test_mkdir_and_rmdir_follow_the_view(user, box) -> None:
    with pytest.raises(FileExistsError):
        os.mkdir(user / "out")
    (user / "ckpt").mkdir()
    assert (user / "ckpt").is_dir()
    with pytest.raises(OSError, match="not empty"):
        os.rmdir(user / "out" / "sub")
    os.remove(user / "out" / "sub" / "deep.txt")
    os.rmdir(user / "out" / "sub")
    assert not (user / "out" / "sub").exists()
    (user / "ckpt").rmdir()
    assert not (user / "ckpt").exists()


def test_shutil_copy_numpy_and_pathlib_are_redirected(user, box) -> None:
    shutil.copy(user / "out" / "model.pt", user / "out" / "best.pt")
    shutil.copy2(user / "out" / "log.csv", user / "log_copy.csv")
    assert (user / "out" / "best.pt").read_bytes() == b"recorded model"
    np.save(user / "out" / "w.npy", np.arange(3))
    np.savez(user / "out" / "both.npz", a=np.ones(2), b=np.zeros(1))
    assert np.load(user / "out" / "w.npy").tolist() == [0, 1, 2]
    assert np.load(user / "out" / "both.npz")["a"].tolist() == [1.0, 1.0]
    (user / "out" / "p.txt").write_bytes(b"pathlib")
    (user / "out" / "p.txt").touch()
    (user / "out" / "p.txt").chmod(0o600)
    os.utime(user / "notes.txt")  # copies up, real mtime untouched (the fixture checks bytes)
    assert (user / "out" / "p.txt").read_bytes() == b"pathlib"
    (user / "out" / "p.txt").unlink()
    assert not (user / "out" / "p.txt").exists()


def test_torch_save_and_load_of_a_path_go_through_the_overlay(user, box) -> None:
    import torch

    torch.save({"w": torch.arange(4.0)}, user / "out" / "model.pt")
    assert torch.load(user / "out" / "model.pt")["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    torch.save(torch.ones(2), str(user / "out" / "t.pt"))
    assert torch.load(str(user / "out" / "t.pt"), mmap=True).tolist() == [1.0, 1.0]
    torch.save(obj=torch.ones(1), f=user / "out" / "kw.pt")  # the path given by keyword
    assert torch.load(f=user / "out" / "kw.pt").tolist() == [1.0]
    buf = io.BytesIO()  # file objects pass through untouched
    torch.save(torch.zeros(1), buf)
    assert torch.load(io.BytesIO(buf.getvalue())).tolist() == [0.0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still used
def test_torch_jit_save_and_load_of_a_path_go_through_the_overlay(user, box) -> None:
    import torch

    scripted = torch.jit.script(torch.nn.Linear(2, 1))
    torch.jit.save(scripted, str(user / "out" / "model.jit"))  # C++ opens the file
    assert torch.jit.load(str(user / "out" / "model.jit")).weight.shape == (1, 2)


def test_system_temp_writes_are_redirected_but_tempfile_names_are_real(tmp_path, box) -> None:
    guessed = Path(tempfile.gettempdir()) / f"florql-sandbox-test-{os.getpid()}.txt"
    guessed.write_text("replay")
    assert guessed.read_text() == "replay"
    made = tempfile.mkdtemp()
    with tempfile.NamedTemporaryFile(dir=made, delete=False) as f:
        f.write(b"x")
    (Path(made) / "inner.txt").write_text("real")
    mine = tempfile.mkdtemp(dir=tmp_path)  # in a folder the caller chose: redirected
    assert os.path.isdir(mine)
    box.__exit__(None, None, None)  # leave early to look at the real folders
    try:
        assert not guessed.exists()  # another run's file of that name would be intact
        assert not os.path.exists(mine)
        assert (Path(made) / "inner.txt").read_text() == "real"
        assert Path(f.name).read_bytes() == b"x"
    finally:
        shutil.rmtree(made)
    box.__enter__()


def test_real_roots_are_written_in_place(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with Sandbox(str(tmp_path / "scratch"), real=[str(store)]):
        (store / "seg").write_bytes(b"values")
        os.replace(store / "seg", store / "seg1")
    assert (store / "seg1").read_bytes() == b"values"


def test_leaving_restores_every_patched_function(tmp_path: Path) -> None:
    import builtins

    import torch

    before = (builtins.open, io.open, os.stat, os.listdir, shutil.rmtree, torch.save, torch.load)
    jit = (torch.jit.save, torch.jit._serialization.save)
    with Sandbox(str(tmp_path / "scratch")):
        assert builtins.open is not before[0] and torch.save is not before[5]
        assert sys.dont_write_bytecode
    after = (builtins.open, io.open, os.stat, os.listdir, shutil.rmtree, torch.save, torch.load)
    assert after == before and (torch.jit.save, torch.jit._serialization.save) == jit


def test_a_wrapper_kept_past_exit_calls_straight_through(tmp_path: Path) -> None:
    # A module imported inside may hold `open` itself (`from builtins import open`).
    import builtins

    with Sandbox(str(tmp_path / "scratch")):
        kept_open, kept_remove = builtins.open, os.remove
    with kept_open(tmp_path / "after.txt", "w") as f:
        f.write("real")
    assert (tmp_path / "after.txt").read_text() == "real"
    kept_remove(tmp_path / "after.txt")
    assert not (tmp_path / "after.txt").exists()


def test_torch_imported_inside_the_sandbox_is_patched_too(tmp_path: Path) -> None:
    # A fresh worker imports torch only when the script does, after the sandbox is entered.
    user = tmp_path / "user"
    user.mkdir()
    code = (
        "import os, sys\n"
        "from florql.replay.sandbox import Sandbox\n"
        "assert 'torch' not in sys.modules\n"
        f"with Sandbox({str(tmp_path / 'scratch')!r}):\n"
        "    import torch\n"
        f"    torch.save(torch.ones(3), {str(user / 'm.pt')!r})\n"
        f"    print(torch.load({str(user / 'm.pt')!r}).sum().item())\n"
        "print(torch.save is torch.serialization.save and torch.load is torch.serialization.load"
        " and torch.jit.save is torch.jit._serialization.save)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3.0", "True"]
    assert list(user.iterdir()) == []


def test_overlay_rename_of_a_missing_path_names_it() -> None:
    ov = Overlay(tempfile.mkdtemp())
    missing = os.path.join(tempfile.mkdtemp(), "nothing")
    with pytest.raises(FileNotFoundError, match="nothing"):
        ov.rename(missing, missing + ".bak")
