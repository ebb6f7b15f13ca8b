"""Handlers of `florql record` and `florql runs` (flags: florql/cli.py; `check`: check_command.py).

`main` runs a script under a recording session like `python SCRIPT ARGS`, then prints one summary
line to stderr; its exit code is the script's. Bad input (missing or non-Python script, malformed
`--arg`, a value that cannot be logged, an unwritable store) is one clear line and exit 2: `--arg`
values are checked against the script's literal defaults before it runs, and a bad name or value
given to florql.log/arg/loop/args ends the script with one line (no traceback); a run that had
recorded nothing yet leaves no trace in the store. While the script runs, argparse namespaces
are recorded as the run's args (`florql.parsed_args`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from florql import config, declared_args, sources
from florql.errors import BadInputError
from florql.schema import RUN_RESUME, SEQ, VALUE, Resumes, replay_id_of
from florql.session import NullSession, Session, install

if TYPE_CHECKING:
    from florql_storage import Store


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["lr=0.5", "name=a=b"]` -> `{"lr": "0.5", "name": "a=b"}`; BadInputError without `=`.

    >>> parse_overrides(["lr=0.5", "tag=a=b"])
    {'lr': '0.5', 'tag': 'a=b'}
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadInputError(f"--arg {item!r} is not NAME=VALUE; write e.g. --arg lr=0.5")
        out[name.strip()] = value
    return out


def main(args: Any) -> int:
    """`florql record`: run and record a script; returns the script's exit code."""
    if args.resume:
        return resume_main(args)
    if not args.script:
        raise BadInputError("florql record needs a SCRIPT to run (or --resume RUN)")
    from florql import runner

    script = os.path.abspath(args.script)
    runner.compile_check(script)
    overrides = parse_overrides(args.arg)
    srcs = sources.collect(script)
    _refuse_flordb_kwargs(args.script_args, srcs)
    declared = declared_args.scan(srcs)
    declared_args.check_overrides(overrides, declared)
    if args.overhead is not None and not 0 < args.overhead <= 1:
        raise BadInputError(f"--overhead {args.overhead} must be a fraction in (0, 1], e.g. 0.02")
    argv = [args.script, *args.script_args]
    if config.disabled():  # florql's calls as no-ops (benchmark baseline)
        install(NullSession(overrides))
        try:
            return runner.run_script(script, argv).exit_code
        finally:
            install(None)
    session = Session(
        args.store,
        script=script,
        argv=argv,
        overrides=overrides,
        overhead=args.overhead,
        command=" ".join(["florql", "record", *sys.argv[2:]]) if len(sys.argv) > 1 else None,
        declared_args=declared.names,
    )
    session.start()
    return _run_recorded(session, script, argv)


def _refuse_flordb_kwargs(script_args: list[str], srcs: dict[str, str]) -> None:
    """FlorDB's `--kwargs k=v` after the script: point to `--arg`, unless the script's own
    code names a `--kwargs` option."""
    if "--kwargs" not in script_args or any("--kwargs" in text for text in srcs.values()):
        return
    i = script_args.index("--kwargs")
    given = " ".join(f"--arg {kv}" for kv in script_args[i + 1 :] if "=" in kv)
    raise BadInputError(
        "--kwargs is FlorDB's way to set args; florql takes them before the script: "
        f"florql record {given or '--arg NAME=VALUE'} SCRIPT"
    )


def _run_recorded(session: Session, script: str, argv: list[str]) -> int:
    from florql import parsed_args, runner

    install(session)
    try:
        with parsed_args.patched(session):
            outcome = runner.run_script(script, argv)
    finally:
        install(None)
    log_error = runner.api_error(outcome.exception) if outcome.exception else None
    failed = outcome.exit_code != 0
    status = "failed" if failed else "finished"
    stats = session.end(status, log_error or outcome.error, keep=log_error is None)
    if log_error and not session._begun:  # nothing was recorded: the error is all there is
        print(f"florql: error: {log_error}", file=sys.stderr)
        return 2
    for name in session.unconsumed_overrides():
        print(
            f"florql: warning: --arg {name} was given but the script never called "
            f"florql.arg({name!r}, ...); it had no effect",
            file=sys.stderr,
        )
    degraded = f", degraded: {stats['degraded_reason']}" if stats.get("degraded") else ""
    print(
        f"florql: run {session.run_id} {'failed' if failed else 'finished'}: "
        f"{stats['values']} values, {stats['checkpoints']} checkpoints "
        f"({_mb(stats['stored_bytes'])} stored of {_mb(stats['raw_bytes'])}), "
        f"overhead {100 * stats['overhead']:.1f}% of the wall time{degraded} "
        f"-> {session.store_path}",
        file=sys.stderr,
    )
    if log_error:
        print(f"florql: error: {log_error}", file=sys.stderr)
        return 2
    return outcome.exit_code


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def resume_main(args: Any) -> int:
    """`florql record --resume RUN`: continue a crashed run from its last checkpoint."""
    from florql_storage import Store

    from florql.resume import ResumeSession, check_resumable, choose_checkpoint

    if args.script:
        raise BadInputError("--resume RUN re-runs the recorded script; do not give a SCRIPT too")
    store = Store.open(args.store, create=False)
    try:
        run = store.runs().get(args.resume)
        check_resumable(run, args.resume)
        ckpt = choose_checkpoint(store, args.resume)
    finally:
        store.close()
    meta = run.meta or {}
    script = meta.get("script")
    if not script or not os.path.isfile(script):
        raise BadInputError(f"the script of run {args.resume} ({script}) no longer exists")
    if ckpt is None:
        print(
            f"florql: warning: run {args.resume} has no complete checkpoint; "
            "restarting it from the beginning",
            file=sys.stderr,
        )
    session = ResumeSession(args.store, run, ckpt)
    _warn_if_changed(session, meta)
    saved = os.getcwd()
    if meta.get("cwd") and os.path.isdir(meta["cwd"]):
        os.chdir(meta["cwd"])
    try:
        session.start()
        return _run_recorded(session, script, session.argv)
    finally:
        os.chdir(saved)


def _warn_if_changed(session: Any, meta: dict) -> None:
    from florql import sources

    now = sources.source_hash(sources.collect(meta["script"]))
    if meta.get("source_hash") and now != meta["source_hash"]:
        print(
            "florql: warning: the script or its local modules changed since the run was "
            "recorded; the resumed part runs the current code",
            file=sys.stderr,
        )


# --- runs and check ------------------------------------------------------------------------------

RUN_COLUMNS = [
    "run_id", "script", "status", "started", "ended", "values", "checkpoints", "args", "degraded"
]  # fmt: skip


def run_rows(store: Store) -> list[dict[str, Any]]:
    """One dict per run (RUN_COLUMNS), oldest first."""
    ckpts: dict[str, int] = {}
    for c in store.checkpoints():
        ckpts[c.run_id] = ckpts.get(c.run_id, 0) + 1
    rows = []
    for rid, info in sorted(store.runs().items(), key=lambda kv: kv[1].begin_lsn):
        meta, end = info.meta or {}, info.end or {}
        stats = end.get("stats") or {}
        values = stats.get("values")
        if values is None or end.get("resumed"):
            values = _count_values(store, rid, info.begin_lsn)
        rows.append(
            {
                "run_id": rid,
                "script": os.path.basename(meta.get("script") or ""),
                "status": info.status,
                "started": _time(meta.get("started_at")),
                "ended": _time(end.get("ended_at")),
                "values": values,
                "checkpoints": ckpts.get(rid, 0),
                "args": {**(meta.get("args") or {}), **(end.get("args") or {})},
                "degraded": "yes" if stats.get("degraded") else "",
            }
        )
    return rows


def _count_values(store: Store, run_id: str, begin_lsn: int) -> int:
    """Recorded values of a run, minus those a resume superseded (seq above the resume's)."""
    values, resumes = [], Resumes()
    for r in store.records_after(run_id, begin_lsn, kinds=[VALUE, RUN_RESUME]):
        if r.kind == RUN_RESUME:
            resumes.add(r.lsn, r.body["seq"])
        elif not replay_id_of(r.body):
            values.append((r.lsn, r.body[SEQ]))
    return sum(1 for lsn, seq in values if not resumes.superseded(lsn, seq))


def _time(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def runs_main(args: Any) -> int:
    """`florql runs`: list the store's runs as a table, csv or json."""
    from florql_storage import Store

    if not os.path.isdir(args.store):
        raise BadInputError(f"no store at {args.store}; record a run first or pass --store DIR")
    store = Store.open(args.store, create=False)
    try:
        rows = run_rows(store)
    finally:
        store.close()
    sys.stdout.write(format_rows(rows, args.format))
    return 0


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """Render run rows.

    >>> print(format_rows([{"run_id": "r1", "values": 3, "args": {"lr": 0.1}}], "csv"), end="")
    run_id,values,args
    r1,3,"{""lr"": 0.1}"
    """
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    cols = list(rows[0]) if rows else RUN_COLUMNS
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(cols)
        w.writerows(cells)
        return out.getvalue()
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    if not rows:
        lines.append("(no runs)")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return json.dumps(v)
    return "" if v is None else str(v)
