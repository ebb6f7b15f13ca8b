"""Invariant 7 on scripts written the way people write them (tests/replay/corpus/).

Each case records a script, edits it the way a user adds hindsight statements, answers a query
through the CLI (first a subset, `WHERE epoch >= k`, then everything), and compares every
value bit for bit with a from-scratch recording of the edited script (the oracle). The
scripts draw from unseeded NumPy and Python `random`; both recordings start from the same
states (the launcher seeds them before florql starts, as any fresh interpreter's entropy would
be), while replay workers start from fresh ones: only restored RNG states make them agree.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.replay.conftest import env

CORPUS = Path(__file__).parent / "corpus"
LAUNCH = (
    "import random, sys, numpy; random.seed(11); numpy.random.seed(11); "
    "from florql.cli import main; sys.exit(main(sys.argv[1:]))"
)

LM_EPOCH = """\
    florql.log("lr_now", lr)
    florql.log("best_so_far", best_val_loss)
    florql.log("steps_so_far", global_step)
    florql.log("hist_len", len(history))
    florql.log("gn", torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf).item())
"""
LM_START = """\
for epoch in florql.loop("epoch", range(1, args.epochs + 1)):
    florql.log("gn_start", float(sum(p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None)))
"""
LM_STEP = """\
        florql.log("loss", loss.item())
        florql.log("lr_step", lr)
        florql.log("gstep", global_step)
"""
MAIN_EPOCH = """\
        florql.log("scale_now", scale)
        florql.log("bad", stopper.bad)
        florql.log("nval", len(history["val"]))
        florql.log("lr_now", opt.param_groups[0]["lr"])
        florql.log("best_w", float(best_state["0.weight"].sum()) if best_state else 0.0)
        florql.log("gn", float(sum(p.grad.norm() ** 2 for p in model.parameters())))
        florql.log("total2", total * 2)
        florql.log("seen", len(SEEN))
"""


def _cli(project: Path, *args: str, every: int | None = None) -> subprocess.CompletedProcess:
    e = env()
    if every is not None:
        e["FLORQL_CKPT_EVERY"] = str(every)
    r = subprocess.run(
        [sys.executable, "-c", LAUNCH, *args],
        cwd=project,
        env=e,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    return r


def _edit(text: str, epoch: str = "", after: str = "", step: str = "", start: str = "") -> str:
    out = text
    if epoch:
        indent = "        " if "        # @@EPOCH@@" in text else "    "
        out = out.replace(f"{indent}# @@EPOCH@@\n", epoch)
    if after:
        out = out.replace("# @@AFTER@@\n", after)
    if step:
        out = out.replace('        florql.log("loss", loss.item())\n', step)
    if start:
        out = out.replace(start.splitlines()[0] + "\n", start)
    assert out != text
    return out


def _rows(project: Path, sql: str, *flags: str) -> list[dict]:
    r = _cli(project, "query", "--store", ".florql", "--format", "json", *flags, sql)
    return json.loads(r.stdout), r.stderr


def _pair(tmp_path: Path, v1: str, v2: str, *args: str, every: int) -> tuple[Path, Path]:
    """`v1` recorded in a project whose script is then edited to `v2`, and the oracle: `v2`
    recorded from scratch. Returns (project, oracle)."""
    project, oracle = tmp_path / "project", tmp_path / "oracle"
    for folder, text in ((project, v1), (oracle, v2)):
        folder.mkdir()
        (folder / "train.py").write_text(text)
        _cli(folder, "record", "--store", ".florql", "train.py", *args, every=every)
    (project / "train.py").write_text(v2)
    return project, oracle


def _check(project: Path, oracle: Path, sql: str) -> str:
    """The query answered in `project` (replaying) equals the oracle's recorded answer, and
    the replay left the project's files as they were."""
    before = _files(project)
    got, err = _rows(project, sql)
    want, _ = _rows(oracle, sql, "--no-replay")
    assert got == want, err
    assert "diverged" not in err, err
    assert _files(project) == before, "replay changed the user's folder"
    return err


def _check_subset_then_all(
    project: Path, oracle: Path, cols: str, name: str, first: int, order: str = "epoch"
) -> None:
    """`_check` on the rows where `name` is set, first for `epoch >= first`, then all."""
    base = f"SELECT {cols} FROM logs WHERE {name} IS NOT NULL"
    _check(project, oracle, f"{base} AND epoch >= {first} ORDER BY {order}")
    _check(project, oracle, f"{base} ORDER BY {order}")


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but the store."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".florql" not in p.parts
    }


@pytest.mark.parametrize("every", [1, 2])
def test_module_globals_best_so_far_and_gradients_replay_exactly(tmp_path, every) -> None:
    v1 = (CORPUS / "lm_globals.py").read_text().replace('florql.log("val_loss"', 'florql.log("val"')
    (tmp_path / "v1.py").write_text(v1)
    v2 = _edit(v1, epoch=LM_EPOCH, after='florql.log("final_lr", lr)\n', start=LM_START)
    project, oracle = _pair(tmp_path, v1, v2, every=every)
    cols = "epoch, val, lr_now, best_so_far, steps_so_far, hist_len, gn"
    _check(
        project,
        oracle,
        f"SELECT {cols} FROM logs WHERE val IS NOT NULL AND epoch >= 4 ORDER BY epoch",
    )
    _check(
        project, oracle, f"SELECT {cols}, gn_start FROM logs WHERE val IS NOT NULL ORDER BY epoch"
    )
    _check(project, oracle, "SELECT final_lr, best_again FROM logs WHERE final_lr IS NOT NULL")


def test_per_step_statements_in_a_train_function_read_restored_globals(tmp_path) -> None:
    v1 = (CORPUS / "lm_globals.py").read_text()
    v2 = _edit(v1, step=LM_STEP)
    project, oracle = _pair(tmp_path, v1, v2, every=2)
    cols = "epoch, step, loss, lr_step, gstep"
    _check_subset_then_all(project, oracle, cols, "lr_step", 5, order="epoch, step")
    # Everything is stored now: --verify re-executes two epochs in full and compares.
    _, err = _rows(project, "SELECT count(lr_step) FROM logs", "--verify")
    assert re.search(r"verified by re-executing [234] iteration\(s\) in full", err), err
    assert "every stored value was reproduced" in err and "warning" not in err, err


def test_locals_of_main_unregistered_optimizer_and_helper_objects_replay_exactly(tmp_path) -> None:
    v1 = (CORPUS / "main_fn.py").read_text()
    v2 = _edit(v1, epoch=MAIN_EPOCH)
    project, oracle = _pair(tmp_path, v1, v2, every=1)
    cols = "epoch, val, scale_now, bad, nval, lr_now, best_w, gn, total2, seen"
    _check_subset_then_all(project, oracle, cols, "val", 3)


def test_a_variable_no_checkpoint_can_hold_makes_replay_start_over_and_says_why(tmp_path) -> None:
    v1 = (CORPUS / "main_fn.py").read_text()
    v2 = _edit(v1, epoch='        florql.log("bonus_now", bonus)\n')
    project, oracle = _pair(tmp_path, v1, v2, "--stream", every=1)
    sql = (
        "SELECT epoch, val, bonus_now FROM logs WHERE val IS NOT NULL AND epoch >= 4 ORDER BY epoch"
    )
    plan = _cli(project, "explain", "--store", ".florql", sql).stdout
    assert "stream" in plan and "generator" in plan, plan
    err = _check(project, oracle, sql)
    assert "stream" in err


def test_meters_trackers_and_summary_objects_replay_exactly(tmp_path) -> None:
    v1 = (CORPUS / "meters.py").read_text()
    v2 = (
        v1.replace("    # @@TRAIN@@\n", '    florql.log("train_count", losses.count)\n')
        .replace(
            "        # @@EPOCH@@\n",
            '        florql.log("since", tracker.epochs_since)\n'
            '        florql.log("best_so_far", summary.value)\n'
            '        florql.log("lr_now", optimizer.param_groups[0]["lr"])\n',
        )
        .replace("    # @@AFTER@@\n", '    florql.log("best_value", summary.value)\n')
    )
    project, oracle = _pair(tmp_path, v1, v2, every=1)
    cols = "epoch, avg, train_count, since, best_so_far, lr_now"
    sql = f"SELECT {cols} FROM logs WHERE avg IS NOT NULL AND epoch >= 2 ORDER BY epoch"
    err = _check(project, oracle, sql)
    assert "replaying from the start" not in err and "cannot restore" not in err, err
    _check(project, oracle, f"SELECT {cols} FROM logs WHERE avg IS NOT NULL ORDER BY epoch")
    _check(project, oracle, "SELECT best_value FROM logs WHERE best_value IS NOT NULL")
