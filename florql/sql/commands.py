"""Handlers for `florql query` and `florql explain` (flags are declared in florql/cli.py).

This path never imports torch: a query starts in well under a second. Errors are raised as
`FlorqlError`s; the CLI prints them as one sentence on stderr and exits 2 (bad input) or 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from florql.sql.connection import Connection
from florql.sql.format import format_result


def query_main(args: Any) -> int:
    """`florql query [--store DIR] [--format F] [--no-replay] [--workers N] SQL`."""
    con = Connection(
        args.store,
        replay=not args.no_replay,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        persist=True,
        memory_limit=args.memory_limit,
        timeout=args.timeout,
        tolerance=args.tolerance,
        verify=args.verify,
        allow_damage=getattr(args, "allow_damage", False),
    )
    try:
        table = con.sql(args.sql).arrow()
    finally:
        con.close()
    output = getattr(args, "output", None)  # namespaces built by hand (tests) may lack it
    if output is not None or args.format == "parquet":
        from florql.sql.export import write_table

        write_table(table, args.format, output)
        return 0
    try:
        sys.stdout.write(format_result(table, args.format))
        sys.stdout.flush()
    except BrokenPipeError:  # `florql query ... | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps interpreter exit quiet)
    return 0


def explain_main(args: Any) -> int:
    """`florql explain [--store DIR] SQL`: what the query reads and what it would replay."""
    con = Connection(args.store, replay=False, persist=True)
    try:
        sys.stdout.write(explain_text(con, args.sql))
    finally:
        con.close()
    return 0


def explain_text(con: Connection, sql: str) -> str:
    """The explanation `florql explain` prints (see README)."""
    analysis = con.analyze(sql)
    partial = con.partially_logged(analysis, con.catalog())
    lines = [f"views read: {', '.join(sorted(analysis.views)) or '(none)'}"]
    if analysis.names:
        described = [
            f"{n} ({_status(n, analysis.missing, partial)})" for n in sorted(analysis.names)
        ]
        lines.append(f"variables: {', '.join(described)}")
    else:
        lines.append("variables: (none)")
    lines.append(f"selection: {analysis.selection.describe()}")
    lines += _runs_lines(con, analysis.selection)
    if analysis.missing or partial:
        lines.append("replay:")
        lines += ["  " + line for line in _replay_plan(con, analysis, partial).splitlines()]
    else:
        lines.append("replay: nothing to replay (every variable is logged)")
    return "\n".join(lines) + "\n"


def _status(name: str, missing: set[str], partial: set[str]) -> str:
    if name in missing:
        return "not logged yet"
    if name in partial:
        return "not logged by every run"
    return "logged"


def _runs_lines(con: Connection, selection: Any) -> list[str]:
    cache = con.cache
    if not cache.loops:
        return []
    outer = cache.ordered_loops()[0]
    slot = cache.loop_slot(outer)
    rows = con._duck.execute(
        f"SELECT DISTINCT run_id, {slot} FROM _contexts WHERE {slot} IS NOT NULL ORDER BY 1, 2"
    ).fetchall()
    per_run: dict[str, list] = {}
    for run_id, value in rows:
        per_run.setdefault(run_id, []).append(value)
    lines = [f"selectable {outer} values per run:"]
    for run_id, values in per_run.items():
        chosen = [v for v in values if selection.admits(run_id, {outer: v})]
        lines.append(f"  {run_id}: {_ranges(chosen)} ({len(chosen)} of {len(values)})")
    return lines


def _ranges(values: list) -> str:
    """Compress sorted ints into ranges: [1,2,3,5] -> '1-3, 5'.

    >>> _ranges([1, 2, 3, 5, 7, 8]), _ranges([]), _ranges(["a", "b"])
    ('1-3, 5, 7-8', 'none', 'a, b')
    """
    if not values:
        return "none"
    if not all(isinstance(v, int) for v in values):
        return ", ".join(str(v) for v in values)
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def _replay_plan(con: Connection, analysis: Any, partial: set[str]) -> str:
    try:
        from florql.replay import hindsight
    except ImportError:
        return "hindsight replay is not available in this installation"
    plan = getattr(hindsight, "plan", None)
    if plan is None:
        return "hindsight replay is not available in this installation"
    names = sorted(set(analysis.missing) | partial)
    optional = partial - set(analysis.missing)
    return str(plan(con.store_path, names, analysis.selection, optional=optional).describe())
