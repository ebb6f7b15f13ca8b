"""One replay task (docs/INTERFACES.md §3) executed in this process, as a replay worker does.

The task's script runs through `florql.runner.run_script` under a `ReplaySession` (restoring
checkpoints instead of recording), inside a sandbox that sends its file writes to a scratch
folder, while a watch on the recorded run's folders reports what changed anyway.
"""

from __future__ import annotations

import json
import os
from typing import Any

from florql import session as session_mod
from florql.replay.fingerprint import Watch
from florql.replay.messages import ReplayTask
from florql.replay.sandbox import Sandbox
from florql.replay_session import ReplaySession
from florql.runner import run_script


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one replay task (docs/INTERFACES.md §3, the task file's content); write and
    return its result (`TaskResult.to_json()`).

    Raises BadInputError for a malformed task. A script error is reported in the result
    (`error`) rather than raised.
    """
    spec = ReplayTask.from_json(task)
    rs = ReplaySession(spec)
    rs.start()
    session_mod.install(rs)
    saved_cwd = os.getcwd()
    folders = [spec.cwd or saved_cwd, *rs.extra_path()]
    box, watch = _isolation(spec, folders)
    try:
        os.chdir(spec.cwd or saved_cwd)
        with box:
            outcome = run_script(spec.script, spec.argv or [spec.script], rs.extra_path())
    finally:
        os.chdir(saved_cwd)
        session_mod.install(None)
    result = rs.finish(outcome.error)
    result.warnings = [*result.warnings, *watch.warnings(spec.run_id)]
    started = (rs.run_info.meta or {}).get("started_at")
    if result.fidelity.get("first_mismatch") and isinstance(started, (int, float)):
        result.warnings += box.leftover_warnings(spec.run_id, started, folders)
    out = result.to_json()
    if spec.result_path:
        tmp = spec.result_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f)
        os.replace(tmp, spec.result_path)
    return out


def _isolation(task: ReplayTask, folders: list[str]) -> tuple[Sandbox, Watch]:
    """The sandbox the replayed script runs in (its file writes go to the task's `scratch`
    folder, or a fresh temporary one), and a watch on the recorded run's folders that reports
    what changed anyway (florql/replay/sandbox.py, fingerprint.py)."""
    import tempfile

    scratch = task.scratch or tempfile.mkdtemp(prefix="florql-scratch-")
    store = os.path.abspath(task.store)
    own = [store, scratch]
    if task.result_path:
        own.append(os.path.dirname(os.path.abspath(task.result_path)))
    return Sandbox(scratch, real=[store]), Watch(folders, exclude=own)
