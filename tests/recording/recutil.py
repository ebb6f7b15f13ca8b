"""Helpers for the recording tests: child processes with florql importable, store readers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from florql_storage import Store, kinds

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_cnn.py"
SCALE = int(os.environ.get("FLORQL_TEST_SCALE", "1"))

# The example, tiny: 4 epochs of 8 steps (512 samples, batch 64), a checkpoint every epoch.
TINY = ["--overhead", "1", "--arg", "epochs=4", "--arg", "samples=512"]
EPOCHS, STEPS = 4, 8


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child python: florql importable from the repo whatever the cwd."""
    env = dict(os.environ)
    env.pop("FLORQL_STORE", None)
    env.pop("FLORQL_DISABLE", None)
    env["FLORQL_CKPT_EVERY"] = "1"  # deterministic checkpoints; the policy has its own tests
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def florql_cli(
    *args: str, cwd: str | Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run `python -m florql ARGS` in a child process; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "florql", *args],
        cwd=cwd or REPO,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=240,
    )


def run_ids(store: str | Path) -> dict[str, str]:
    """{run_id: status} of a store."""
    s = Store.open(str(store), create=False)
    try:
        return {rid: info.status for rid, info in s.runs().items()}
    finally:
        s.close()


def effective_values(store: str | Path, run_id: str) -> list[tuple]:
    """The run's recorded values as a query sees them: (seq, name, value, ctx), seq order.

    Applies the supersede rule of RUN_RESUME (docs/INTERFACES.md §2) independently of florql.
    """
    s = Store.open(str(store), create=False)
    try:
        values, resumes = [], []
        for r in s.scan(kinds=[kinds.VALUE, kinds.RUN_RESUME], run_id=run_id):
            if r.kind == kinds.RUN_RESUME:
                resumes.append((r.lsn, r.body["seq"]))
            elif r.body[0] == run_id and r.body[6] == "":
                values.append((r.lsn, r.body))
    finally:
        s.close()
    kept = [b for lsn, b in values if not any(b[1] > rseq and lsn < rlsn for rlsn, rseq in resumes)]
    return sorted((b[1], b[2], b[3], _ctx(b[4])) for b in kept)


def _ctx(ctx: list) -> tuple:
    return tuple(tuple(c) for c in ctx)
