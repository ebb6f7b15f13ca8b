"""Replay never touches the user's files (invariant 7, issue 9 item 3), end to end.

A script written the way people write them (argparse, the loops inside `train()`, a model saved
with `torch.save` every epoch, the best kept with `shutil.copy`, a CSV log appended to, a NumPy
array saved, the best model reloaded with `torch.load` after the loop) is recorded, edited
to log values read back from the files it saves, and queried through the CLI. The oracle is a
from-scratch recording of the edited script; the working folder must be byte-identical before
and after the query.

Before the query the files in `out/` are overwritten with other weights, as a later experiment
would leave them: a replay that read the user's files instead of its own writes would then log
different values from the oracle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.replay.conftest import florql_cli, record, values

SCRIPT = """\
import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

import florql


def build(width):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))


def evaluate(model, data):
    with torch.no_grad():
        return float(sum(((model(x) - y) ** 2).mean() for x, y in data))


def train(model, opt, data, out):
    best = float("inf")
    for epoch in florql.loop("epoch", range(args.epochs)):
        for x, y in florql.loop("step", data):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            time.sleep(0.01)
        val = evaluate(model, data)
        florql.log("val", val)
        torch.save(model.state_dict(), os.path.join(out, "model.pt"))
        if val < best:
            best = val
            shutil.copy(os.path.join(out, "model.pt"), os.path.join(out, "best.pt"))
        with open(os.path.join(out, "log.csv"), "a") as f:
            f.write(f"{epoch},{val}\\n")
        np.save(os.path.join(out, "weights.npy"), model[0].weight.detach().numpy())
        Path(out, "last_epoch.txt").write_text(str(epoch))
#EPOCH


parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--out", default="out")
args = parser.parse_args()
if os.path.exists(os.path.join(args.out, "log.csv")):
    os.remove(os.path.join(args.out, "log.csv"))  # a fresh log per run
os.makedirs(args.out, exist_ok=True)
model = build(8)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
g = torch.Generator().manual_seed(1)
data = [(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)) for _ in range(4)]
florql.checkpointing(model=model, optimizer=opt)
train(model, opt, data, args.out)
model.load_state_dict(torch.load(os.path.join(args.out, "best.pt")))
#AFTER
"""

EPOCH = (
    '        florql.log("saved_wsum", '
    'float(torch.load(os.path.join(out, "model.pt"))["0.weight"].sum()))\n'
    '        florql.log("npy_first", float(np.load(os.path.join(out, "weights.npy"))[0, 0]))'
)
AFTER = 'florql.log("best_wsum", float(model[0].weight.detach().sum()))'
NEW = {"saved_wsum", "npy_first", "best_wsum"}
EDITED = SCRIPT.replace("#EPOCH", EPOCH).replace("#AFTER", AFTER)


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (and the folder list), by relative path."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _overwrite_outputs(out: Path) -> None:
    """Other weights in the saved files, as a later experiment in the same folder leaves."""
    import numpy as np
    import torch

    for name in ("model.pt", "best.pt"):
        sd = torch.load(out / name)
        torch.save({k: v * 2 + 1 for k, v in sd.items()}, out / name)
    np.save(out / "weights.npy", np.load(out / "weights.npy") * 3)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The script recorded in its folder (store outside it), then edited, outputs replaced."""
    folder = tmp_path_factory.mktemp("files-project")
    store = folder.parent / (folder.name + "-store")
    run_id = record(folder, store, SCRIPT)
    vals = [v for (_, _), (v,) in sorted(values(store, run_id, {"val"}).items())]
    # The best model is the last one: which epoch is best is not what this test is about.
    assert vals == sorted(vals, reverse=True) and len(set(vals)) == 5, vals
    assert sorted(p.name for p in (folder / "out").iterdir()) == [
        "best.pt",
        "last_epoch.txt",
        "log.csv",
        "model.pt",
        "weights.npy",
    ]
    (folder / "train.py").write_text(EDITED)
    _overwrite_outputs(folder / "out")
    return folder, store, run_id


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("files-oracle")
    store = folder.parent / (folder.name + "-store")
    run_id = record(folder, store, EDITED)
    return values(store, run_id, NEW)


@pytest.mark.parametrize("warm_seconds", ["120", "0"], ids=["warm-workers", "fresh-workers"])
def test_replay_leaves_the_working_folder_byte_identical_and_matches_a_rerun(
    project, oracle, warm_seconds, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FLORQL_WARM_SECONDS", warm_seconds)
    folder, recorded_store, run_id = project
    store = tmp_path / "store"
    shutil.copytree(recorded_store, store)
    before = _hashes(folder)
    r = florql_cli(
        "query",
        "--store",
        str(store),
        "--format",
        "csv",
        "SELECT epoch, saved_wsum, npy_first, best_wsum FROM logs",
        cwd=folder,
    )
    assert r.returncode == 0, r.stderr
    assert _hashes(folder) == before
    assert "changed while the replay ran" not in r.stderr
    got = values(store, run_id, NEW, replayed=True)
    assert len(oracle) == 5 * 2 + 1 and got == oracle  # exact: same seeds, CPU


NATIVE = """\
import subprocess
import time

import torch

import florql

model = torch.nn.Linear(2, 1)
florql.checkpointing(model=model)
for epoch in florql.loop("epoch", range(4)):
    for step in florql.loop("step", range(3)):
        time.sleep(0.01)
    florql.log("w", float(model.weight.sum()))
#EPOCH
"""


def test_a_write_florql_cannot_redirect_is_reported_by_name(tmp_path: Path) -> None:
    # A subprocess writes past the sandbox: the second wall (fingerprint) names the file.
    folder = tmp_path / "proj"
    folder.mkdir()
    run_id = record(folder, tmp_path / "store", NATIVE.replace("#EPOCH", ""))
    assert run_id
    stmt = '    florql.log("rc", subprocess.call(["sh", "-c", "echo native >> native_output.txt"]))'
    (folder / "train.py").write_text(NATIVE.replace("#EPOCH", stmt))
    r = florql_cli("query", "--store", str(tmp_path / "store"), "SELECT rc FROM logs", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "changed while the replay ran" in r.stderr and "native_output.txt" in r.stderr
    assert r.stderr.count("native_output.txt") == 1  # said once, not once per worker
    assert os.path.exists(folder / "native_output.txt")  # what the warning is about


KEEP_LAST_TWO = """\
import glob
import os
import time

import torch

import florql

run_dir = os.path.join("outputs", "run")
os.makedirs(run_dir, exist_ok=True)
os.chdir(run_dir)  # as Hydra does
torch.manual_seed(0)
model = torch.nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
florql.checkpointing(model=model, optimizer=opt)
x, y = torch.randn(8, 3), torch.randn(8, 1)
for epoch in florql.loop("epoch", range(4)):
    for step in florql.loop("step", range(3)):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        time.sleep(0.01)
    torch.save(model.state_dict(), f"ckpt_{epoch}.pt")
    for old in sorted(glob.glob("ckpt_*.pt"), key=os.path.getmtime)[:-2]:
        os.remove(old)  # keep the last two
    florql.log("kept", len(glob.glob("ckpt_*.pt")))
#EPOCH
"""


def test_a_divergence_from_files_the_run_left_behind_names_them(tmp_path: Path) -> None:
    # The folder still holds the recording's last two checkpoints, which the recording did
    # not see at epoch 0: the replay diverges, says so, and names the files as the likely cause.
    folder = tmp_path / "proj"
    folder.mkdir()
    store = tmp_path / "store"
    record(folder, store, KEEP_LAST_TWO.replace("#EPOCH", ""))
    before = _hashes(folder)
    stmt = '    florql.log("names", ",".join(sorted(os.listdir("."))))'
    (folder / "train.py").write_text(KEEP_LAST_TWO.replace("#EPOCH", stmt))
    before["train.py"] = _hashes(folder)["train.py"]
    r = florql_cli("query", "--store", str(store), "SELECT epoch, names FROM logs", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "diverged" in r.stderr
    assert "read files that run itself wrote or changed" in r.stderr
    assert "outputs/run/ckpt_3.pt" in r.stderr
    assert _hashes(folder) == before  # the replay's deletes were whiteouts
