"""The query cache: the store's records in DuckDB tables, refreshed incrementally via Arrow.

The store is the truth; this cache is a derived copy that lives in memory for one connection.
Each `refresh(store)` reads only the frames after the last LSN it ingested
(`Store.refresh()` + `scan_frames(from_lsn=last + 1)`), decodes them into Python column lists,
builds one Arrow table per refresh and inserts it in bulk (never row by row). If the store's last
LSN is ever below what the cache ingested (the store was replaced), the cache starts over.

Internal tables (never named by users: `safety.py` admits only the views):

- `_contexts(ctx_id, run_id, __l0, __l1, ...)`: one row per run and loop context in which a
  value was logged; `__lK` holds the value of loop K of `self.loops` (BIGINT while every value of
  that loop is an int, VARCHAR once a str appears).
- `_values(run_id, lsn, seq, ctx_id, name, value, value_text, logged_at, replay_id, __lK...)`:
  one row per visible VALUE record. `value` is the number (bools as 1.0/0.0), `value_text` the
  text of a str value or the JSON of a list/dict; None leaves both NULL.
- `_replays(replay_id, run_id, status, diverged)`; `_runs`, `_args`, `_checkpoints`: rebuilt
  from `Store.runs()` / `Store.checkpoints()` (small) when they change.

Invariants:
1. `last_lsn` is the highest LSN whose effects are in the tables; frames are ingested whole.
2. Values of a resumed run that RUN_RESUME supersedes (seq > its seq, LSN below it) are deleted
   before any later frame is ingested, so no query sees them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa
from florql_storage import kinds

_VALUE_COLUMNS = "run_id VARCHAR, lsn BIGINT, seq BIGINT, ctx_id BIGINT, name VARCHAR, value DOUBLE, value_text VARCHAR, logged_at TIMESTAMP, replay_id VARCHAR"


def _loop_col(k: int) -> str:
    return f"__l{k}"


class Cache:
    """Holds the DuckDB tables and what was ingested so far (see module docstring)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.last_lsn = 0
        self.decoded_records = 0  # records decoded since creation: tests count incrementality
        self.loops: list[str] = []
        self._loop_set: set[str] = set()
        self.loop_depth: dict[str, int] = {}  # shallowest position seen in a ctx (0: outermost)
        self.loop_types: list[str] = []
        self.text_names: set[str] = set()
        self.names: Counter[str] = Counter()
        self.recorded_names: set[str] = set()  # names with a value a run logged (not a replay)
        self.values_per_run: Counter[str] = Counter()
        self.replays: dict[str, dict] = {}
        self._contexts: dict[tuple, int] = {}
        self._runs_signature: Any = None
        self._ckpt_lsn = -1
        self._create_tables()

    # --- tables -------------------------------------------------------------------------------

    def _create_tables(self) -> None:
        self.con.execute("CREATE OR REPLACE TABLE _contexts (ctx_id BIGINT, run_id VARCHAR)")
        self.con.execute(f"CREATE OR REPLACE TABLE _values ({_VALUE_COLUMNS})")
        self.con.execute(
            "CREATE OR REPLACE TABLE _replays (replay_id VARCHAR, run_id VARCHAR, "
            "status VARCHAR, diverged BOOLEAN)"
        )
        self.con.execute(
            "CREATE OR REPLACE TABLE _runs (run_id VARCHAR, script VARCHAR, status VARCHAR, "
            "args JSON, started_at TIMESTAMP, ended_at TIMESTAMP, source_hash VARCHAR, "
            'git VARCHAR, "values" BIGINT, checkpoints BIGINT, error VARCHAR)'
        )
        self.con.execute("CREATE OR REPLACE TABLE _args (run_id VARCHAR)")
        self.args: list[str] = []
        self.con.execute(
            "CREATE OR REPLACE TABLE _checkpoints (ckpt_id VARCHAR, run_id VARCHAR, lsn BIGINT, "
            "seq BIGINT, phase VARCHAR, ctx JSON, raw_bytes BIGINT, stored_bytes BIGINT, "
            "write_seconds DOUBLE)"
        )

    def reset(self) -> None:
        """Forget everything; the next refresh re-reads the store from its first record."""
        self.__init__(self.con)  # type: ignore[misc]

    # --- refresh ------------------------------------------------------------------------------

    def refresh(self, store: Any) -> int:
        """Ingest what the store gained since the last refresh; return the records decoded."""
        store.refresh()
        if store.last_lsn < self.last_lsn:
            self.reset()
        before = self.decoded_records
        if store.last_lsn > self.last_lsn:
            self._ingest(store.scan_frames(from_lsn=self.last_lsn + 1))
        self._refresh_runs(store)
        if self.last_lsn != self._ckpt_lsn:
            self._refresh_checkpoints(store)
        return self.decoded_records - before

    def _ingest(self, frames: Iterable[list]) -> None:
        batch = _Batch(len(self.loops))
        for frame in frames:
            for rec in frame:
                kind = rec.kind
                if kind == kinds.VALUE:
                    self._add_value(batch, rec)
                elif kind == kinds.LOOP:
                    # Loop columns exist as soon as a loop ran, even before anything was logged.
                    if rec.body[2] not in self._loop_set:
                        self._loop_index(rec.body[2])
                        self._note_depth(rec.body[2], len(rec.body[3]) - 1)
                elif kind == kinds.RUN_RESUME:
                    self._flush(batch)
                    batch = _Batch(len(self.loops))
                    self._supersede(rec)
                elif kind == kinds.REPLAY_END:
                    self._replay_end(rec.body)
                self.last_lsn = rec.lsn
            self.decoded_records += len(frame)
        self._flush(batch)

    def _add_value(self, batch: _Batch, rec: Any) -> None:
        run_id, seq, name, value, ctx, t, replay_id = rec.body[:7]
        if run_id != batch.last_run or ctx != batch.last_ctx:
            batch.last_run, batch.last_ctx = run_id, ctx
            batch.last_id = self._context_id(batch, run_id, ctx)
        batch.run_id.append(run_id)
        batch.lsn.append(rec.lsn)
        batch.seq.append(seq)
        batch.ctx_id.append(batch.last_id)
        batch.name.append(name)
        batch.t.append(t)
        batch.replay_id.append(replay_id or "")
        if not replay_id and name not in self.recorded_names:
            self.recorded_names.add(name)
        tv = type(value)
        if tv is float or tv is int or tv is bool:
            batch.value.append(float(value))
            batch.text.append(None)
        elif value is None:
            batch.value.append(None)
            batch.text.append(None)
        else:
            batch.value.append(None)
            batch.text.append(value if tv is str else json.dumps(value, allow_nan=True))
            self.text_names.add(name)
        self.names[name] += 1
        self.values_per_run[run_id] += 1

    def _context_id(self, batch: _Batch, run_id: str, ctx: list) -> int:
        key = (run_id, *(tuple(level) for level in ctx))
        found = self._contexts.get(key)
        if found is not None:
            return found
        ctx_id = len(self._contexts) + 1
        self._contexts[key] = ctx_id
        row: dict[int, Any] = {}
        for depth, (loop_name, _iteration, value) in enumerate(ctx):
            k = self._loop_index(loop_name)
            self._note_depth(loop_name, depth)
            row[k] = int(value) if isinstance(value, bool) else value
        batch.new_contexts.append((ctx_id, run_id, row))
        return ctx_id

    def _note_depth(self, loop_name: str, depth: int) -> None:
        if depth < self.loop_depth.get(loop_name, 1 << 30):
            self.loop_depth[loop_name] = max(depth, 0)

    def ordered_loops(self) -> list[str]:
        """Loop names, outermost first (then in order of appearance)."""
        return sorted(self.loops, key=lambda n: (self.loop_depth.get(n, 0), self.loops.index(n)))

    def loop_slot(self, loop_name: str) -> str:
        """The internal column that holds `loop_name`'s values."""
        return _loop_col(self.loops.index(loop_name))

    def _loop_index(self, loop_name: str) -> int:
        try:
            return self.loops.index(loop_name)
        except ValueError:
            self.loops.append(loop_name)
            self._loop_set.add(loop_name)
            self.loop_types.append("BIGINT")
            col = _loop_col(len(self.loops) - 1)
            for table in ("_contexts", "_values"):
                self.con.execute(f"ALTER TABLE {table} ADD COLUMN {col} BIGINT")
            return len(self.loops) - 1

    def _widen_loops(self, contexts: list) -> None:
        for _ctx_id, _run_id, row in contexts:
            for k, value in row.items():
                if isinstance(value, str) and self.loop_types[k] == "BIGINT":
                    self.loop_types[k] = "VARCHAR"
                    for table in ("_contexts", "_values"):
                        self.con.execute(
                            f"ALTER TABLE {table} ALTER COLUMN {_loop_col(k)} TYPE VARCHAR"
                        )

    def _flush(self, batch: _Batch) -> None:
        if batch.new_contexts:
            self._insert_contexts(batch.new_contexts)
        if not batch.lsn:
            return
        ingest = pa.table(
            {
                "run_id": pa.array(batch.run_id, pa.string()),
                "lsn": pa.array(batch.lsn, pa.int64()),
                "seq": pa.array(batch.seq, pa.int64()),
                "ctx_id": pa.array(batch.ctx_id, pa.int64()),
                "name": pa.array(batch.name, pa.string()),
                "value": pa.array(batch.value, pa.float64()),
                "value_text": pa.array(batch.text, pa.string()),
                "t": pa.array(batch.t, pa.float64()),
                "replay_id": pa.array(batch.replay_id, pa.string()),
            }
        )
        loops = ", ".join(f"c.{_loop_col(k)}" for k in range(len(self.loops)))
        self.con.register("__ingest_values", ingest)
        try:
            self.con.execute(
                "INSERT INTO _values BY NAME SELECT i.run_id, i.lsn, i.seq, i.ctx_id, i.name, "
                "i.value, i.value_text, make_timestamp(CAST(i.t * 1000000 AS BIGINT)) AS logged_at, "
                f"i.replay_id{', ' + loops if loops else ''} "
                "FROM __ingest_values i JOIN _contexts c USING (ctx_id)"
            )
        finally:
            self.con.unregister("__ingest_values")

    def _insert_contexts(self, contexts: list) -> None:
        self._widen_loops(contexts)
        columns: dict[str, Any] = {
            "ctx_id": pa.array([c[0] for c in contexts], pa.int64()),
            "run_id": pa.array([c[1] for c in contexts], pa.string()),
        }
        for k, typ in enumerate(self.loop_types):
            raw = [c[2].get(k) for c in contexts]
            if typ == "VARCHAR":
                columns[_loop_col(k)] = pa.array(
                    [None if v is None else str(v) for v in raw], pa.string()
                )
            else:
                columns[_loop_col(k)] = pa.array(raw, pa.int64())
        self.con.register("__ingest_contexts", pa.table(columns))
        try:
            self.con.execute("INSERT INTO _contexts BY NAME SELECT * FROM __ingest_contexts")
        finally:
            self.con.unregister("__ingest_contexts")

    def _supersede(self, rec: Any) -> None:
        body = rec.body
        run_id, seq = body["run_id"], body["seq"]
        where = "run_id = ? AND seq > ? AND lsn < ?"
        params = [run_id, seq, rec.lsn]
        gone = self.con.execute(
            f"SELECT name, count(*) FROM _values WHERE {where} GROUP BY name", params
        ).fetchall()
        if not gone:
            return
        self.con.execute(f"DELETE FROM _values WHERE {where}", params)
        for name, n in gone:
            self.names[name] -= n
            self.values_per_run[run_id] -= n
        self.names += Counter()  # drops names with no visible value left
        empty = self.con.execute(
            "SELECT ctx_id FROM _contexts c WHERE run_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM _values v WHERE v.ctx_id = c.ctx_id)",
            [run_id],
        ).fetchall()
        if empty:
            ids = {row[0] for row in empty}
            self.con.execute(
                "DELETE FROM _contexts WHERE ctx_id IN (SELECT unnest(?::BIGINT[]))", [list(ids)]
            )
            self._contexts = {k: v for k, v in self._contexts.items() if v not in ids}

    def _replay_end(self, body: dict) -> None:
        fidelity = body.get("fidelity") or {}
        diverged = bool(fidelity.get("first_mismatch")) or (
            fidelity.get("matched", 0) < fidelity.get("checked", 0)
        )
        replay_id = body.get("replay_id", "")
        self.replays[replay_id] = body
        self.con.execute(
            "INSERT INTO _replays VALUES (?, ?, ?, ?)",
            [replay_id, body.get("run_id"), body.get("status"), diverged],
        )

    # --- run and checkpoint metadata -----------------------------------------------------------

    def _refresh_runs(self, store: Any) -> None:
        runs = store.runs()
        signature = tuple(
            (r.run_id, r.status, r.last_lsn, self.values_per_run.get(r.run_id, 0))
            for r in runs.values()
        )
        if signature == self._runs_signature:
            return
        self._runs_signature = signature
        ckpt_counts = Counter(c.run_id for c in store.checkpoints())
        rows = [
            _run_row(r, self.values_per_run.get(r.run_id, 0), ckpt_counts) for r in runs.values()
        ]
        table = pa.table(
            {
                "run_id": pa.array([r[0] for r in rows], pa.string()),
                "script": pa.array([r[1] for r in rows], pa.string()),
                "status": pa.array([r[2] for r in rows], pa.string()),
                "args": pa.array([r[3] for r in rows], pa.string()),
                "started_at": pa.array([r[4] for r in rows], pa.float64()),
                "ended_at": pa.array([r[5] for r in rows], pa.float64()),
                "source_hash": pa.array([r[6] for r in rows], pa.string()),
                "git": pa.array([r[7] for r in rows], pa.string()),
                "values": pa.array([r[8] for r in rows], pa.int64()),
                "checkpoints": pa.array([r[9] for r in rows], pa.int64()),
                "error": pa.array([r[10] for r in rows], pa.string()),
            }
        )
        self.con.register("__ingest_runs", table)
        try:
            self.con.execute("DELETE FROM _runs")
            self.con.execute(
                "INSERT INTO _runs SELECT run_id, script, status, CAST(args AS JSON), "
                "make_timestamp(CAST(started_at * 1000000 AS BIGINT)), "
                "make_timestamp(CAST(ended_at * 1000000 AS BIGINT)), source_hash, git, "
                '"values", checkpoints, error FROM __ingest_runs'
            )
        finally:
            self.con.unregister("__ingest_runs")
        self._refresh_args(runs)

    def _refresh_args(self, runs: dict) -> None:
        per_run = {rid: dict((r.meta or {}).get("args") or {}) for rid, r in runs.items()}
        names = sorted({a for args in per_run.values() for a in args})
        columns: dict[str, Any] = {"run_id": pa.array(list(per_run), pa.string())}
        for k, arg in enumerate(names):
            columns[f"__a{k}"] = _arg_array([args.get(arg) for args in per_run.values()])
        self.con.register("__ingest_args", pa.table(columns))
        try:
            self.con.execute("CREATE OR REPLACE TABLE _args AS SELECT * FROM __ingest_args")
        finally:
            self.con.unregister("__ingest_args")
        self.args = names

    def _refresh_checkpoints(self, store: Any) -> None:
        ckpts = store.checkpoints()
        self._ckpt_lsn = self.last_lsn
        loops = list(self.loops)
        rows = []
        for c in ckpts:
            meta = c.meta or {}
            ctx = meta.get("ctx") or []
            rows.append((c, meta, ctx))
        columns: dict[str, Any] = {
            "ckpt_id": pa.array([c.ckpt_id for c, _, _ in rows], pa.string()),
            "run_id": pa.array([c.run_id for c, _, _ in rows], pa.string()),
            "lsn": pa.array([c.lsn for c, _, _ in rows], pa.int64()),
            "seq": pa.array([m.get("seq") for _, m, _ in rows], pa.int64()),
            "phase": pa.array([m.get("phase") for _, m, _ in rows], pa.string()),
            "ctx": pa.array([json.dumps(ctx) for _, _, ctx in rows], pa.string()),
            "raw_bytes": pa.array([c.raw_bytes for c, _, _ in rows], pa.int64()),
            "stored_bytes": pa.array([c.stored_bytes for c, _, _ in rows], pa.int64()),
            "write_seconds": pa.array([c.write_seconds for c, _, _ in rows], pa.float64()),
        }
        for k, loop in enumerate(loops):
            vals = [_ctx_value(ctx, loop) for _, _, ctx in rows]
            if self.loop_types[k] == "VARCHAR":
                columns[_loop_col(k)] = pa.array(
                    [None if v is None else str(v) for v in vals], pa.string()
                )
            else:
                columns[_loop_col(k)] = pa.array(
                    [v if isinstance(v, int) else None for v in vals], pa.int64()
                )
        self.con.register("__ingest_ckpts", pa.table(columns))
        try:
            self.con.execute(
                "CREATE OR REPLACE TABLE _checkpoints AS SELECT * REPLACE (CAST(ctx AS JSON) AS ctx) "
                "FROM __ingest_ckpts"
            )
        finally:
            self.con.unregister("__ingest_ckpts")


class _Batch:
    """Column lists for one bulk insert (list appends are the cheapest way to build columns)."""

    def __init__(self, n_loops: int) -> None:
        self.run_id: list = []
        self.lsn: list = []
        self.seq: list = []
        self.ctx_id: list = []
        self.name: list = []
        self.value: list = []
        self.text: list = []
        self.t: list = []
        self.replay_id: list = []
        self.new_contexts: list = []
        self.last_run: Any = None
        self.last_ctx: Any = None
        self.last_id = 0


def _ctx_value(ctx: list, loop: str) -> Any:
    for level in ctx:
        if level and level[0] == loop:
            return level[2]
    return None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _run_row(r: Any, values: int, ckpt_counts: Counter) -> tuple:
    meta = r.meta or {}
    end = r.end or {}
    return (
        r.run_id,
        meta.get("script"),
        r.status,
        json.dumps(meta.get("args") or {}, default=str),
        _num(meta.get("started_at")),
        _num(end.get("ended_at")),
        meta.get("source_hash"),
        None if meta.get("git") is None else str(meta.get("git")),
        values,
        ckpt_counts.get(r.run_id, 0),
        end.get("error"),
    )


def _arg_array(values: list) -> pa.Array:
    """One arg's values across runs: BIGINT, DOUBLE, BOOLEAN or VARCHAR (JSON for containers)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([_text(v) for v in values], pa.string())


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return json.dumps(v, default=str)
