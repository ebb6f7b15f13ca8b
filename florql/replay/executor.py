"""Running replay tasks on a pool of worker processes.

Each task is written to `TASK.json` in a private folder and run as
`sys.executable -m florql.replay.worker TASK.json` (the same interpreter as the caller, never a
bare `python`), with stdin closed so nothing can prompt, stdout and stderr captured to files.
By default the worker is a fork of a warm server that has already imported torch
(`florql.replay.warm`; the same interpreter, environment and folder, without the 3-5 s start);
where none can be had, a fresh interpreter runs it (and the rest of the request's tasks).
At most `workers` run at once; tasks start in the order given (the planner puts long ones
first). A worker's outcome is its result file (docs/INTERFACES.md §3); a worker that exits
non-zero, or whose result carries `error`, has failed, and its stderr tail says why.

`default_workers()` is the number of CPU cores, or the number of visible GPUs when CUDA is
present; it does not import torch unless the caller already did. With several GPUs each worker
slot gets one of them (`CUDA_VISIBLE_DEVICES`), so that the workers divide the GPUs rather
than share the first.

>>> import sys, tempfile
>>> fake = [sys.executable, "-c", "import json,sys; t=json.load(open(sys.argv[1])); json.dump({'executed': [s['iteration'] for s in t['steps']]}, open(t['result_path'], 'w'))"]
>>> outs = run_tasks([{"steps": [{"iteration": 3}]}, {"steps": []}], 2, tempfile.mkdtemp(), command=fake)
>>> [(o.ok, o.result["executed"]) for o in outs]
[(True, [3]), (True, [])]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from florql.replay import warm as _warm

STDERR_TAIL = 2000


@dataclass
class TaskOutcome:
    """What one task's worker did."""

    index: int
    task: dict[str, Any]
    returncode: int | None = None
    result: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.result) and not self.result.get("error")

    def why(self) -> str:
        """One line saying why the task failed."""
        if self.result.get("error"):
            return str(self.result["error"]).strip().splitlines()[-1]
        tail = self.stderr.strip().splitlines()
        if tail:
            return tail[-1]
        return f"worker exited with status {self.returncode} and wrote no result"


def default_workers(threads_per_worker: int = 1) -> int:
    """Visible GPUs when CUDA is present, else CPU cores // threads per worker (at least 1).

    A replay must run with the thread count the run recorded (a different count changes float
    reductions, so values would not match bit for bit); workers beyond cores // threads only
    compete for the same cores and make the replay slower.

    >>> default_workers(threads_per_worker=10**6)  # more threads than cores: one worker
    1
    """
    gpus = len(visible_gpu_ids())
    if gpus:
        return gpus
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads_per_worker))


def visible_gpu_ids() -> list[str]:
    """The CUDA devices this process may use, as `CUDA_VISIBLE_DEVICES` names them ([] on a
    CPU machine). Does not import torch; asks it only when the caller already did."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for d in (d.strip() for d in visible.split(",")):
            if not d or d == "-1":  # CUDA stops at the first invalid entry
                break
            ids.append(d)
        return ids
    torch = sys.modules.get("torch")
    try:
        if torch is not None:
            n = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        else:
            n = len(os.listdir("/proc/driver/nvidia/gpus"))
    except Exception:  # a broken CUDA install means "no GPU", not a failed replay
        return []
    return [str(k) for k in range(n)]


def run_tasks(
    tasks: Sequence[dict[str, Any]],
    workers: int,
    workdir: str,
    command: Sequence[str] | None = None,
    on_poll: Callable[[list[TaskOutcome]], None] | None = None,
    poll_seconds: float = 0.02,
    env: dict[str, str] | None = None,
) -> list[TaskOutcome]:
    """Run every task, `workers` at a time; return their outcomes in task order.

    Args:
        tasks: task dicts; `result_path` is filled in when absent.
        workers: concurrent processes (at least 1).
        workdir: private folder for task files, results and logs.
        command: the worker command before the task path (default: this interpreter running
            `florql.replay.worker`); tests pass a fake.
        on_poll: called with the finished outcomes so far, about every `poll_seconds`.
    """
    warm = [command is None and _warm.enabled()]  # cleared when no server can be had
    cmd = list(command) if command else [sys.executable, "-m", _warm.WORKER_MODULE]
    gpus = visible_gpu_ids()
    free = list(range(max(1, workers)))  # worker slots; slot k uses GPU k when there are several
    pending = list(enumerate(tasks))
    running: list[tuple[Any, TaskOutcome, float, Any, int]] = []  # Popen or warm.WarmProcess
    done: list[TaskOutcome] = []
    try:
        while pending or running:
            while pending and free:
                i, task = pending.pop(0)
                slot = free.pop(0)
                extra = dict(env or {})
                if len(gpus) > 1:  # one GPU per worker, so that the workers divide them
                    extra["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                running.append((*_start(i, dict(task), cmd, workdir, extra, warm), slot))
            time.sleep(poll_seconds)
            still = []
            for proc, out, t0, err, slot in running:
                if proc.poll() is None:
                    still.append((proc, out, t0, err, slot))
                else:
                    done.append(_finish(proc, out, t0, err))
                    free.append(slot)
            running = still
            if on_poll is not None:
                on_poll(done)
    finally:
        for proc, _, _, err, _ in running:  # interrupted: stop only the workers we started
            proc.kill()
            proc.wait()
            err.close()
    return sorted(done, key=lambda o: o.index)


def _start(
    i: int,
    task: dict[str, Any],
    cmd: list[str],
    workdir: str,
    env: dict[str, str] | None,
    warm: list[bool],
) -> tuple[Any, TaskOutcome, float, Any]:
    task.setdefault("result_path", os.path.join(workdir, f"result-{i}.json"))
    task.setdefault("scratch", os.path.join(workdir, f"scratch-{i}"))  # florql/replay/sandbox.py
    path = os.path.join(workdir, f"task-{i}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(task, f)
    log = os.path.join(workdir, f"worker-{i}.log")
    err = open(log, "w+b")  # noqa: SIM115 (closed in _finish)
    if warm[0]:
        try:
            warm_proc = _warm.start_task([path], task.get("cwd"), worker_env(env), log)
            return warm_proc, TaskOutcome(i, task), time.monotonic(), err
        except OSError as e:  # no warm server: a fresh interpreter does the same, slower
            print(f"florql: note: warm replay workers unavailable ({e})", file=sys.stderr)
            warm[0] = False
    proc = subprocess.Popen(
        [*cmd, path],
        stdin=subprocess.DEVNULL,
        stdout=err,
        stderr=subprocess.STDOUT,
        cwd=task.get("cwd") or None,
        env=worker_env(env),
    )
    return proc, TaskOutcome(i, task), time.monotonic(), err


def warm_server_running(env: dict[str, str] | None = None) -> bool:
    """Whether workers started now would be forks of a running warm server."""
    return _warm.enabled() and _warm.running(worker_env(env))


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: the caller's, with florql's own import root first on
    PYTHONPATH so the worker imports the same florql as this process (also from a source
    checkout that is not installed)."""
    root = os.path.dirname(_warm.FLORQL_DIR)
    env = {**os.environ, **(extra or {})}
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    return env


def _finish(proc: Any, out: TaskOutcome, t0: float, err: Any) -> TaskOutcome:
    out.returncode = proc.returncode
    out.seconds = time.monotonic() - t0
    err.seek(0)
    out.stderr = err.read()[-STDERR_TAIL:].decode("utf-8", "replace")
    err.close()
    try:
        with open(out.task["result_path"], encoding="utf-8") as f:
            out.result = json.load(f)
    except (OSError, ValueError):
        out.result = {}
    return out
