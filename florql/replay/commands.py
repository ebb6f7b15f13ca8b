"""`florql replay [--run ID]... [--where PRED] [--workers N] [--name NAME]... [SCRIPT]`.

Replays new log statements explicitly, without a query: by default every name that the current
code of some run's script logs and its recorded code does not; `--name` restricts that. SCRIPT is
the current version of the script (default: each run's recorded script path). Output: one line
per run replayed and a summary; warnings go to stderr. Exit codes: 0 done (also when there was
nothing to do), 1 a replay failed, 2 bad input (an unknown run, a bad predicate, a name no
current code logs).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from florql.errors import BadInputError
from florql.replay import hindsight
from florql.replay.predicate import parse_where


def replay_main(args: Any) -> int:
    """Handler of `florql replay` (flags are declared in florql/cli.py)."""
    store = args.store
    if not os.path.isdir(store):
        raise BadInputError(f"no store at {store}; record a run first or pass --store DIR")
    script = getattr(args, "script", None)
    if script and not os.path.isfile(script):
        raise BadInputError(
            f"script {script} does not exist; pass the current version of the training script"
        )
    if args.workers is not None and args.workers < 1:
        raise BadInputError(f"--workers {args.workers} must be at least 1")
    selection = parse_where(args.where)
    runs = list(args.run or [])
    names = list(args.name or []) or sorted(hindsight.discover(store, script=script, runs=runs))
    if not names:
        print("nothing to replay: no current script logs a name its recorded run did not")
        return 0
    report = hindsight.ensure(
        store,
        names,
        selection,
        workers=args.workers,
        progress=True,
        script=script,
        runs=runs,
        tolerance=args.tolerance,
        verify=args.verify,
    )
    if report.unresolved:
        raise BadInputError(
            f"no new florql.log statement logs {', '.join(sorted(report.unresolved))}: the "
            "current script does not log it, or the recorded runs already did; add the "
            "statement to the script (or pass SCRIPT) and retry"
        )
    for run_id in report.runs:
        done = report.executed.get(run_id, [])
        print(f"run {run_id}: replayed {', '.join(names)} ({len(done)} iterations re-executed)")
    print(report.summary())
    for edit in report.other_edits:
        print(f"not replayed: {edit}", file=sys.stderr)
    return 0
