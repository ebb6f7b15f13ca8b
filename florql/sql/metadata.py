"""The small tables rebuilt from the store's run and checkpoint metadata: `_runs`, `_args`,
`_checkpoints` (see `cache.py`). They are rebuilt whole when they change: a store has few runs
and checkpoints compared with values.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import duckdb
import pyarrow as pa

from florql.sql import columns

RUNS_SCHEMA = (
    "run_id VARCHAR, script VARCHAR, status VARCHAR, args JSON, started_at TIMESTAMP, "
    'ended_at TIMESTAMP, source_hash VARCHAR, git VARCHAR, "values" BIGINT, checkpoints BIGINT, '
    "error VARCHAR, command VARCHAR, python VARCHAR, torch VARCHAR, host VARCHAR, rank BIGINT, "
    "world_size BIGINT, degraded BOOLEAN"
)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return json.dumps(v, default=str)


def arg_column(values: list) -> pa.Array:
    """One arg's values across runs: BIGINT, DOUBLE, BOOLEAN or VARCHAR (JSON for containers).

    >>> arg_column([1, None]).type, arg_column([1, 0.5]).type, arg_column([True]).type
    (DataType(int64), DataType(double), DataType(bool))
    >>> arg_column(["adam", [1, 2]]).to_pylist()
    ['adam', '[1, 2]']
    """
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return columns.bool_column(values)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return columns.int_column(values)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return columns.float_column(values)
    return columns.string_column([_text(v) for v in values])


def _insert(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str) -> None:
    con.register(name, table)
    try:
        con.execute(sql)
    finally:
        con.unregister(name)


def run_args(info: Any) -> dict:
    """A run's args: those known at its start (RUN_BEGIN), then all of them (RUN_END)."""
    meta, end = info.meta or {}, info.end or {}
    return {**(meta.get("args") or {}), **(end.get("args") or {})}


def _int(x: Any, default: int) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else default


def rebuild_runs(con: duckdb.DuckDBPyConnection, runs: dict, values: Counter, ckpts: list) -> None:
    """`_runs` from `Store.runs()`; `values` counts visible values per run.

    Runs recorded before florql stored rank and world size read as rank 0 of 1.
    """
    per_run = Counter(c.run_id for c in ckpts)
    infos = list(runs.values())
    metas = [r.meta or {} for r in infos]
    ends = [r.end or {} for r in infos]
    stats: list[dict] = [e["stats"] if isinstance(e.get("stats"), dict) else {} for e in ends]
    table = columns.table(
        {
            "run_id": columns.string_column([r.run_id for r in infos]),
            "script": columns.string_column([m.get("script") for m in metas]),
            "status": columns.string_column([r.status for r in infos]),
            "args": columns.string_column([json.dumps(run_args(r), default=str) for r in infos]),
            "started_at": columns.float_column([_num(m.get("started_at")) for m in metas]),
            "ended_at": columns.float_column([_num(e.get("ended_at")) for e in ends]),
            "source_hash": columns.string_column([m.get("source_hash") for m in metas]),
            "git": columns.string_column([_text(m.get("git")) for m in metas]),
            "values": columns.int_column([values.get(r.run_id, 0) for r in infos]),
            "checkpoints": columns.int_column([per_run.get(r.run_id, 0) for r in infos]),
            "error": columns.string_column([_text(e.get("error")) for e in ends]),
            "command": columns.string_column([_text(m.get("command")) for m in metas]),
            "python": columns.string_column([_text(m.get("python")) for m in metas]),
            "torch": columns.string_column([_text(m.get("torch")) for m in metas]),
            "host": columns.string_column([_text(m.get("host")) for m in metas]),
            "rank": columns.int_column([_int(m.get("rank"), 0) for m in metas]),
            "world_size": columns.int_column([_int(m.get("world_size"), 1) for m in metas]),
            "degraded": columns.bool_column([bool(s.get("degraded")) for s in stats]),
        }
    )
    con.execute("DELETE FROM _runs")
    _insert(
        con,
        "__ingest_runs",
        table,
        "INSERT INTO _runs SELECT run_id, script, status, CAST(args AS JSON), "
        "make_timestamp(CAST(started_at * 1000000 AS BIGINT)), "
        "make_timestamp(CAST(ended_at * 1000000 AS BIGINT)), source_hash, git, "
        '"values", checkpoints, error, command, python, torch, host, rank, world_size, '
        "degraded FROM __ingest_runs",
    )


def rebuild_args(con: duckdb.DuckDBPyConnection, runs: dict) -> list[str]:
    """`_args(run_id, __a0, __a1, ...)`, one column per arg name (sorted); returns the names."""
    per_run = {rid: run_args(r) for rid, r in runs.items()}
    names = sorted({a for args in per_run.values() for a in args})
    cols: dict[str, pa.Array] = {"run_id": columns.string_column(list(per_run))}
    for k, arg in enumerate(names):
        cols[f"__a{k}"] = arg_column([args.get(arg) for args in per_run.values()])
    _insert(
        con,
        "__ingest_args",
        columns.table(cols),
        "CREATE OR REPLACE TABLE _args AS SELECT * FROM __ingest_args",
    )
    return names


def _ctx_value(ctx: list, loop: str) -> Any:
    for level in ctx:
        if level and level[0] == loop:
            return level[2]
    return None


def rebuild_checkpoints(
    con: duckdb.DuckDBPyConnection, ckpts: list, loops: list[str], loop_types: list[str]
) -> None:
    """`_checkpoints` from `Store.checkpoints()`, with the loop slots of the cache."""
    metas = [c.meta or {} for c in ckpts]
    ctxs = [m.get("ctx") or [] for m in metas]
    cols: dict[str, pa.Array] = {
        "ckpt_id": columns.string_column([c.ckpt_id for c in ckpts]),
        "run_id": columns.string_column([c.run_id for c in ckpts]),
        "lsn": columns.int_column([c.lsn for c in ckpts]),
        "seq": columns.int_column([m.get("seq") for m in metas]),
        "phase": columns.string_column([m.get("phase") for m in metas]),
        "ctx": columns.string_column([json.dumps(ctx) for ctx in ctxs]),
        "raw_bytes": columns.int_column([c.raw_bytes for c in ckpts]),
        "stored_bytes": columns.int_column([c.stored_bytes for c in ckpts]),
        "write_seconds": columns.float_column([c.write_seconds for c in ckpts]),
    }
    for k, loop in enumerate(loops):
        vals = [_ctx_value(ctx, loop) for ctx in ctxs]
        if loop_types[k] == "VARCHAR":
            cols[f"__l{k}"] = columns.string_column([None if v is None else str(v) for v in vals])
        else:
            cols[f"__l{k}"] = columns.int_column([v if isinstance(v, int) else None for v in vals])
    _insert(
        con,
        "__ingest_ckpts",
        columns.table(cols),
        "CREATE OR REPLACE TABLE _checkpoints AS SELECT * REPLACE (CAST(ctx AS JSON) AS ctx) "
        "FROM __ingest_ckpts",
    )
