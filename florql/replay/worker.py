"""Replay worker entry point: `python -m florql.replay.worker TASK.json`.

Reads one replay task (docs/INTERFACES.md §3), executes it with `florql.replay.task.run_task` and
writes the result file the task names. Exit code 0 when the task completed, 1 when the script
failed (the result holds `error`), 2 for an unreadable or malformed task.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m florql.replay.worker TASK.json", file=sys.stderr)
        return 2
    from florql.errors import FlorqlError
    from florql.replay.task import run_task

    try:
        with open(args[0], encoding="utf-8") as f:
            task = json.load(f)
        result = run_task(task)
    except (OSError, ValueError) as e:
        print(f"florql: error: cannot read replay task {args[0]}: {e}", file=sys.stderr)
        return 2
    except FlorqlError as e:
        print(f"florql: error: {e}", file=sys.stderr)
        return e.exit_code
    return 1 if result.get("error") else 0


def run_and_exit(run: Callable[[], int | None] | None = None) -> NoReturn:
    """`run()` (default: `main()`), then end the process as interpreter shutdown would
    (non-daemon threads joined, atexit handlers run, output flushed) without tearing down the
    module graph: with torch and `torch._dynamo` loaded, that teardown alone takes most of a
    second."""
    try:
        code = (run or main)()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run_and_exit()
