"""Shared fixtures for replay tests: a tiny training script recorded once per session.

The script is small enough to record in a few seconds but exercises what replay must get
right: a shuffling RNG, dropout, momentum (optimizer state), a variable accumulated inside the
inner loop and read after it. Each step sleeps 10 ms so that the adaptive checkpoint policy
(budget 1.0) can afford a checkpoint at every epoch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

V1 = textwrap.dedent(
    """\
    import random
    import time

    import torch

    import florql

    torch.manual_seed(0)
    random.seed(0)
    epochs = florql.arg("epochs", 6)
    lr = florql.arg("lr", 0.1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(4)]
    florql.checkpointing(model=model, optimizer=opt)
    for epoch in florql.loop("epoch", range(epochs)):
        running = 0.0
        order = list(range(len(data)))
        random.shuffle(order)
        for step, i in florql.loop("step", enumerate(order)):
            x, y = data[i]
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            running += loss.item()
            time.sleep(0.01)
            florql.log("loss", loss.item())
        florql.log("epoch_loss", running)
    """
)

STEP_STMT = (
    '        florql.log("gnorm", float(sum(p.grad.norm() ** 2 for p in model.parameters())))'
)
EPOCH_STMTS = (
    '    florql.log("wnorm", float(sum(p.detach().norm() ** 2 for p in model.parameters())))\n'
    '    florql.log("running2", running * 2)'
)


def v2(step: bool = True, epoch: bool = True, base: str = V1) -> str:
    """V1 plus a per-step statement (gnorm) and/or per-epoch statements (wnorm, running2)."""
    text = base
    if step:
        text = text.replace(
            '        florql.log("loss", loss.item())\n',
            '        florql.log("loss", loss.item())\n' + STEP_STMT + "\n",
        )
    if epoch:
        text = text.replace(
            '    florql.log("epoch_loss", running)\n',
            '    florql.log("epoch_loss", running)\n' + EPOCH_STMTS + "\n",
        )
    return text


def env() -> dict[str, str]:
    """Subprocess environment importing this checkout's florql from any folder."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.pop("FLORQL_STORE", None)
    return e


def florql_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "florql", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
    )


def record(project: Path, store: Path, text: str, *extra: str, name: str = "train.py") -> str:
    """Write `text` as the script, record it into `store`, and return the new run id."""
    (project / name).write_text(text)
    before = set(runs(store)) if store.exists() else set()
    r = florql_cli("record", "--store", str(store), "--overhead", "1.0", *extra, name, cwd=project)
    assert r.returncode == 0, r.stderr
    (new,) = set(runs(store)) - before
    return new


def runs(store: Path) -> dict[str, Any]:
    from florql_storage import Store

    s = Store.open(str(store), create=False)
    try:
        return s.runs()
    finally:
        s.close()


def values(store: Path, run_id: str, names: set[str], replayed: bool | None = None) -> dict:
    """{(name, ((loop, iteration), ...)): [values in seq order]} of a run's VALUE records."""
    from florql_storage import Store

    s = Store.open(str(store), create=False)
    out: dict[tuple, list] = {}
    try:
        rows = []
        for rec in s.scan(kinds=[3]):
            rid, seq, name, value, ctx, _t, replay_id = rec.body
            if rid != run_id or name not in names:
                continue
            if replayed is not None and bool(replay_id) != replayed:
                continue
            rows.append((seq, name, tuple((c[0], c[1]) for c in ctx), value))
        for _seq, name, ctx, value in sorted(rows, key=lambda r: r[0]):
            out.setdefault((name, ctx), []).append(value)
    finally:
        s.close()
    return out


def checkpoint_iterations(store: Path, run_id: str) -> list[int]:
    from florql_storage import Store

    s = Store.open(str(store), create=False)
    try:
        return sorted(c.meta["ctx"][0][1] for c in s.checkpoints(run_id))
    finally:
        s.close()


@dataclass
class Recorded:
    project: Path
    store: Path
    run_id: str

    def copy(self, dest: Path) -> Recorded:
        """An independent copy of the store (same project folder and run id)."""
        shutil.copytree(self.store, dest)
        return Recorded(self.project, dest, self.run_id)


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """V1 recorded once, with a checkpoint at every epoch."""
    project = tmp_path_factory.mktemp("project")
    store = project / ".florql"
    run_id = record(project, store, V1)
    assert checkpoint_iterations(store, run_id) == list(range(6)), "expected one per epoch"
    return Recorded(project, store, run_id)


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Values of V2 recorded from scratch: what hindsight replay must reproduce exactly."""
    project = tmp_path_factory.mktemp("oracle")
    store = project / ".florql"
    run_id = record(project, store, v2())
    return values(store, run_id, {"gnorm", "wnorm", "running2", "loss", "epoch_loss"})


@pytest.fixture
def fresh(recorded: Recorded, tmp_path: Path) -> Recorded:
    """A private copy of the recorded store for one test."""
    return recorded.copy(tmp_path / "store")


@pytest.fixture
def script(tmp_path: Path):
    """Writes a current version of the script in a private folder; returns its path."""

    def write(text: str, name: str = "train.py") -> str:
        folder = tmp_path / "current"
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(text)
        return str(path)

    return write
