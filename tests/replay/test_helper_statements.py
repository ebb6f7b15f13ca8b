"""Hindsight edits with helper variables, through the CLI, against a from-scratch run (oracle).

Invariant 7: a replayed value equals what a from-scratch run of the edited script logs. The
recorded script uses FlorDB's `with florql.checkpointing(...)` form; the edit adds what users
add most: a helper variable and its log (inside the inner loop: the gradient norm), a helper
and a multi-line log after the inner loop, and a small loop building a per-class list.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.replay.conftest import florql_cli, record, values

H1 = textwrap.dedent(
    """\
    import time

    import torch

    import florql

    torch.manual_seed(0)
    epochs = florql.arg("epochs", 4)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 3)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x_train = torch.randn(64, 4)
    y_train = (x_train[:, 0] > 0).long() + (x_train[:, 1] > 0).long()
    x_val = torch.randn(32, 4)
    y_val = (x_val[:, 0] > 0).long() + (x_val[:, 1] > 0).long()
    with florql.checkpointing(model=model, optimizer=opt):
        for epoch in florql.loop("epoch", range(epochs)):
            perm = torch.randperm(64)
            for step in florql.loop("step", range(4)):
                idx = perm[step * 16 : (step + 1) * 16]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                loss.backward()
                opt.step()
                time.sleep(0.01)
                florql.log("loss", loss.item())
            model.eval()
            with torch.no_grad():
                pred = model(x_val).argmax(1)
            model.train()
            florql.log("acc", (pred == y_val).float().mean().item())
    print("done")
    """
)
STEP_EDIT = (
    "            g = torch.sqrt(\n"
    "                sum(p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None)\n"
    "            )\n"
    '            florql.log("grad_norm", g.item())\n'
)
EPOCH_EDIT = (
    "        wn = torch.sqrt(sum(p.detach().norm() ** 2 for p in model.parameters()))\n"
    "        florql.log(\n"
    '            "wnorm",\n'
    "            wn.item(),\n"
    "        )\n"
    "        per_class = []\n"
    "        for c in range(3):\n"
    "            hit = ((pred == c) & (y_val == c)).sum().item()\n"
    "            per_class.append(hit / max(1, (y_val == c).sum().item()))\n"
    '        florql.log("per_class", per_class)\n'
)
H2 = H1.replace(
    "            loss.backward()\n", "            loss.backward()\n" + STEP_EDIT
).replace("        model.train()\n", "        model.train()\n" + EPOCH_EDIT)
NEW = {"grad_norm", "wnorm", "per_class"}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".florql" not in p.parts
    }


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The edited script recorded from scratch."""
    folder = tmp_path_factory.mktemp("helpers-oracle")
    run_id = record(folder, folder / ".florql", H2)
    return values(folder / ".florql", run_id, NEW | {"loss", "acc"})


def test_helper_edits_replay_through_the_cli_equal_to_a_from_scratch_run(
    tmp_path: Path, oracle: dict
) -> None:
    assert H2 != H1 and H2.count("florql.log(") == H1.count("florql.log(") + 3
    project = tmp_path / "p"
    project.mkdir()
    store = project / ".florql"
    run_id = record(project, store, H1)
    (project / "train.py").write_text(H2)  # the user edits the script in place
    before = _files(project)

    # Per-epoch names only, for a subset: restore each selected epoch and skip its inner loop.
    q = "SELECT epoch, wnorm, per_class FROM logs WHERE epoch >= 2 AND wnorm IS NOT NULL"
    explain = florql_cli("explain", "--store", str(store), q, cwd=project)
    assert explain.returncode == 0, explain.stderr
    assert "restore and skip the inner loop" in explain.stdout
    assert (
        "wn = torch.sqrt(" in explain.stdout
        and 'florql.log( "wnorm", wn.item(), )' in explain.stdout
    )
    assert "for c in range(3):" in explain.stdout  # the helper loop is listed as spliced
    r = florql_cli(
        "query", "--store", str(store), "--format", "json", q + " ORDER BY epoch", cwd=project
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    want_w = {k[1][0][1]: v for k, v in oracle.items() if k[0] == "wnorm"}
    assert [(row["epoch"], [row["wnorm"]]) for row in rows] == [(2, want_w[2]), (3, want_w[3])]

    # The per-step helper and its log, every epoch: re-executed from checkpoints.
    r = florql_cli("query", "--store", str(store), "--format", "json",
                   "SELECT count(grad_norm) AS n FROM logs", cwd=project)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"n": 16}]

    got = values(store, run_id, NEW, replayed=True)
    want = {k: v for k, v in oracle.items() if k[0] in NEW}
    late = {k: v for k, v in want.items() if k[0] == "grad_norm" or k[1][0][1] >= 2}
    assert got == late  # bit for bit
    assert len(late) == 16 + 2 + 2
    # The edit changes nothing the run computes: its from-scratch losses are the recorded ones.
    assert values(store, run_id, {"loss"}, replayed=False) == {
        k: v for k, v in oracle.items() if k[0] == "loss"
    }
    assert _files(project) == before  # nothing in the user's folder changed


def test_a_refused_helper_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    store = project / ".florql"
    record(project, store, H1)
    edited = H1.replace(
        "        model.train()\n",
        "        model.train()\n"
        "        noise = torch.randn(1).item()\n"
        '        florql.log("noisy_acc", noise)\n',
    )
    (project / "train.py").write_text(edited)
    r = florql_cli("query", "--store", str(store), "SELECT noisy_acc FROM logs", cwd=project)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "train.py line 32" in line and "draws random numbers (torch.randn)" in line


def test_a_gradient_helper_after_the_inner_loop_sees_the_last_steps_gradients(
    tmp_path: Path,
) -> None:
    after = H1.replace(
        "        model.eval()\n",
        "        last = torch.sqrt(sum(p.grad.norm() ** 2 for p in model.parameters()))\n"
        '        florql.log("last_grad", last.item())\n'
        "        model.eval()\n",
    )
    folder = tmp_path / "o"
    folder.mkdir()
    want = values(folder / ".florql", record(folder, folder / ".florql", after), {"last_grad"})
    project = tmp_path / "p"
    project.mkdir()
    run_id = record(project, project / ".florql", H1)
    (project / "train.py").write_text(after)
    r = florql_cli("query", "--store", str(project / ".florql"), "SELECT last_grad FROM logs",
                   cwd=project)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert values(project / ".florql", run_id, {"last_grad"}, replayed=True) == want
