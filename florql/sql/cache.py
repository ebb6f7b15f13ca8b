"""The query cache: the store's records in DuckDB tables, refreshed incrementally via Arrow.

The store is the truth; this cache is a derived copy that lives in memory for one connection.
Each `refresh(store)` reads only the frames after the last LSN it ingested
(`Store.refresh()` + `scan_bodies(from_lsn=last + 1)`), decodes them into column lists
(`batch.py`), builds one Arrow table per refresh and inserts it in bulk (never row by row). If
the store's last LSN is ever below what the cache ingested (the store was replaced), the cache
starts over.

Internal tables (never named by users: `safety.py` admits only the views):

- `_contexts(ctx_id, run_id, ctx_key, __l0, ..., __n0, ...)`: the wide form, one row per run
  and loop context in which a value was logged; `__lK` holds the value of loop `self.loops[K]`
  (BIGINT while every value of that loop is an int, VARCHAR once a str appears); `__nK` holds
  the last non-NULL value (highest LSN) of logged name K in that context (DOUBLE, or VARCHAR
  once a value of that name was text). Each flush pivots only its own values and merges them
  (new contexts: inserted with their values; older ones: UPDATE with coalesce).
- `_values(run_id, lsn, seq, ctx_id, name, value, value_text, logged_at, replay_id, __lK...)`:
  one row per visible VALUE record. `value` is the number (bools as 1.0/0.0), `value_text` the
  text of a str value or the JSON of a list/dict; None leaves both NULL.
- `_replays(replay_id, run_id, status, diverged)`; `_runs`, `_args`, `_checkpoints`: rebuilt
  from `Store.runs()` / `Store.checkpoints()` (small) when they change (`metadata.py`).

Invariants:
1. `last_lsn` is the highest LSN whose effects are in the tables; frames are ingested whole.
2. Values of a resumed run that RUN_RESUME supersedes (seq > its seq, LSN below it) are deleted
   before any later frame is ingested, so no query sees them; the run's wide columns are then
   recomputed from what remains.
3. `_contexts.__nK` equals the pivot of `_values` (last non-NULL value per context and name).
4. A value stored under a name that cannot be a column (not a non-empty str: stores written
   before florql checked names at the call may hold `5` or `""`), or in a loop of such a name,
   is skipped with one warning per name, so it never breaks queries over everything else.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from collections.abc import Iterable
from itertools import compress, repeat
from operator import is_, itemgetter, methodcaller, ne
from typing import TYPE_CHECKING, Any

import duckdb
from florql_storage import kinds

from florql import schema
from florql.sql import columns, metadata
from florql.sql.batch import Batch
from florql.values import is_name

if TYPE_CHECKING:
    from florql_storage import Store

_VALUE_COLUMNS = (
    "run_id VARCHAR, lsn BIGINT, seq BIGINT, ctx_id BIGINT, name VARCHAR, value DOUBLE, "
    "value_text VARCHAR, logged_at TIMESTAMP, replay_id VARCHAR"
)


_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)
_fourth = itemgetter(3)
_run_id, _ctx = itemgetter(schema.RUN_ID), itemgetter(schema.CTX)  # of a VALUE body


def _as_lists(body: Any) -> Any:
    """`body` as `Store.scan` decodes it: the tuples `scan_bodies` yields become lists.

    >>> _as_lists({"a": (1, (2, {"b": ()}))})
    {'a': [1, [2, {'b': []}]]}
    """
    if type(body) is tuple:
        return [_as_lists(v) for v in body]
    if type(body) is dict:
        return {k: _as_lists(v) for k, v in body.items()}
    return body


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _loop_col(k: int) -> str:
    return f"__l{k}"


class Cache:
    """Holds the DuckDB tables and what was ingested so far (see module docstring)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, *, persistent: bool = False, state: dict | None = None
    ) -> None:
        self.con = con
        self.persistent = persistent
        self.last_lsn = 0
        self.fingerprint = ""  # of the record at last_lsn (persist.py validates with it)
        self.decoded_records = 0  # records decoded since creation: tests count incrementality
        self.loops: list[str] = []  # in order of first appearance; slot K is column __lK
        self.loop_types: list[str] = []
        self.loop_depth: dict[str, int] = {}  # shallowest position seen in a ctx (0: outermost)
        self._loop_pos: dict[str, int] = {}
        self._shape_slots: dict[tuple, tuple] = {}  # loop names of a ctx -> their slots
        self.text_names: set[str] = set()
        self.name_slots: dict[str, int] = {}  # logged name -> K of its _contexts column __nK
        self.names: Counter[str] = Counter()
        self.recorded_by_run: dict[str, set[str]] = {}  # run -> names it logged (not a replay)
        self.values_per_run: Counter[str] = Counter()
        self.replays: dict[str, dict] = {}
        self.args: list[str] = []
        self._contexts: dict[str, dict[tuple, int]] = {}  # run_id -> {ctx as decoded: ctx_id}
        self._partial_contexts = False  # True after a restore: _contexts holds keys not in memory
        self._next_ctx_id = 0
        self._runs_signature: Any = None
        self._ckpt_lsn = -1
        self._bad_contexts: set[int] = set()  # contexts in a loop whose name is no column
        self._warned_names: set[str] = set()
        if state is None:
            self._create_tables()
        else:
            self._restore(state)

    def _create_tables(self) -> None:
        run = self.con.execute
        run("CREATE OR REPLACE TABLE _contexts (ctx_id BIGINT, run_id VARCHAR, ctx_key VARCHAR)")
        run(f"CREATE OR REPLACE TABLE _values ({_VALUE_COLUMNS})")
        run(
            "CREATE OR REPLACE TABLE _replays (replay_id VARCHAR, run_id VARCHAR, "
            "status VARCHAR, diverged BOOLEAN)"
        )
        run(f"CREATE OR REPLACE TABLE _runs ({metadata.RUNS_SCHEMA})")
        run("CREATE OR REPLACE TABLE _args (run_id VARCHAR)")
        run(
            "CREATE OR REPLACE TABLE _checkpoints (ckpt_id VARCHAR, run_id VARCHAR, lsn BIGINT, "
            "seq BIGINT, phase VARCHAR, ctx JSON, raw_bytes BIGINT, stored_bytes BIGINT, "
            "write_seconds DOUBLE)"
        )

    def reset(self) -> None:
        """Forget everything; the next refresh re-reads the store from its first record."""
        self.__init__(self.con, persistent=self.persistent)  # type: ignore[misc]

    # --- persistence (see persist.py) ---------------------------------------------------------

    def state(self) -> dict:
        """What a later process needs to continue from these tables (JSON-able)."""
        return {
            "last_lsn": self.last_lsn,
            "fingerprint": self.fingerprint,
            "loops": self.loops,
            "loop_types": self.loop_types,
            "loop_depth": self.loop_depth,
            "text_names": sorted(self.text_names),
            "name_slots": self.name_slots,
            "names": dict(self.names),
            "recorded_by_run": {r: sorted(n) for r, n in self.recorded_by_run.items()},
            "values_per_run": dict(self.values_per_run),
            "replays": self.replays,
            "next_ctx_id": self._next_ctx_id,
        }

    def _restore(self, state: dict) -> None:
        self.last_lsn = state["last_lsn"]
        self.fingerprint = state["fingerprint"]
        self.loops = list(state["loops"])
        self.loop_types = list(state["loop_types"])
        self.loop_depth = dict(state["loop_depth"])
        self._loop_pos = {name: k for k, name in enumerate(self.loops)}
        self.text_names = set(state["text_names"])
        self.name_slots = dict(state["name_slots"])
        self.names = Counter(state["names"])
        self.recorded_by_run = {r: set(n) for r, n in state["recorded_by_run"].items()}
        self.values_per_run = Counter(state["values_per_run"])
        self.replays = dict(state["replays"])
        self._next_ctx_id = state["next_ctx_id"]
        self._partial_contexts = True

    # --- loops --------------------------------------------------------------------------------

    def ordered_loops(self) -> list[str]:
        """Loop names, outermost first (then in order of appearance)."""
        return sorted(self.loops, key=lambda n: (self.loop_depth.get(n, 0), self._loop_pos[n]))

    def loop_slot(self, loop_name: str) -> str:
        """The internal column that holds `loop_name`'s values."""
        return _loop_col(self._loop_pos[loop_name])

    def _loop_index(self, loop_name: str, depth: int) -> int:
        k = self._loop_pos.get(loop_name)
        if k is None:
            k = self._loop_pos[loop_name] = len(self.loops)
            self.loops.append(loop_name)
            self.loop_types.append("BIGINT")
            for table in ("_contexts", "_values"):
                self.con.execute(f"ALTER TABLE {table} ADD COLUMN {_loop_col(k)} BIGINT")
        if depth < self.loop_depth.get(loop_name, 1 << 30):
            self.loop_depth[loop_name] = max(depth, 0)
        return k

    # --- refresh ------------------------------------------------------------------------------

    def refresh(self, store: Store) -> int:
        """Ingest what the store gained since the last refresh; return the records decoded."""
        store.refresh()
        if store.last_lsn < self.last_lsn:
            self.reset()
        before = self.decoded_records
        if self.persistent:
            self.con.begin()  # tables and their state change together or not at all
        try:
            self._refresh_in_transaction(store)
        except BaseException:
            if self.persistent:
                self.con.rollback()
            raise
        if self.persistent:
            from florql.sql import persist

            persist.save_state(self.con, self.state() | {"store_id": persist.store_id_of(store)})
            self.con.commit()
        return self.decoded_records - before

    def _refresh_in_transaction(self, store: Store) -> None:
        if store.last_lsn > self.last_lsn:
            # The decode loop allocates millions of small objects that all survive: the cyclic
            # GC would rescan them again and again for nothing.
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                self._ingest(store.scan_bodies(from_lsn=self.last_lsn + 1))
            finally:
                if was_enabled:
                    gc.enable()
        self._refresh_runs(store)
        if self.last_lsn != self._ckpt_lsn:
            metadata.rebuild_checkpoints(self.con, store.checkpoints(), self.loops, self.loop_types)
            self._ckpt_lsn = self.last_lsn

    def _ingest(self, frames: Iterable[tuple[int, tuple, tuple]]) -> None:
        """Fold frames `(first_lsn, kinds, bodies)` (`Store.scan_bodies`) into one batch.

        A frame of only VALUE and LOOP records of known loops (nearly all of them) is taken
        whole with C-level filters (`compress`), with no Python code per record; its values'
        context ids are resolved in bulk later (`_resolve_contexts`). Any other frame goes
        record by record (`_ingest_slowly`), after resolving what is pending, so contexts and
        loop slots are numbered in LSN order either way.
        """
        value_kind, loop_kind = kinds.VALUE, kinds.LOOP
        special = (kinds.RUN_RESUME, kinds.REPLAY_END)
        known_loops = self._loop_pos.keys()
        batch = Batch()
        add_bodies, add_lsns = batch.bodies.extend, batch.lsn.extend
        last = None
        for base, frame_kinds, bodies in frames:
            n = len(frame_kinds)
            if (
                special[0] in frame_kinds
                or special[1] in frame_kinds
                or (
                    loop_kind in frame_kinds
                    and not known_loops
                    >= set(map(_third, compress(bodies, map(loop_kind.__eq__, frame_kinds))))
                )
            ):
                self._resolve_contexts(batch)
                self._ingest_slowly(batch, base, frame_kinds, bodies)
            elif frame_kinds.count(value_kind) == n:
                add_bodies(bodies)
                add_lsns(range(base, base + n))
            elif value_kind in frame_kinds:
                picked = list(map(value_kind.__eq__, frame_kinds))
                add_bodies(compress(bodies, picked))
                add_lsns(compress(range(base, base + n), picked))
            self.last_lsn = base + n - 1
            self.decoded_records += n
            last = frame_kinds[-1], bodies[-1]
        self._flush(batch)
        if last is not None and self.persistent:
            from florql.sql.persist import fingerprint_of

            self.fingerprint = fingerprint_of(last[0], _as_lists(last[1]))

    def _ingest_slowly(self, batch: Batch, base: int, frame_kinds: tuple, bodies: tuple) -> None:
        """One frame record by record (resumes, replay ends, new loops); contexts resolved."""
        for i, (kind, body) in enumerate(zip(frame_kinds, bodies, strict=True)):
            if kind == kinds.VALUE:
                batch.bodies.append(body)
                batch.lsn.append(base + i)
                run_id, ctx = body[schema.RUN_ID], body[schema.CTX]
                found = self._contexts.setdefault(run_id, {}).get(ctx)
                if found is None:
                    found = self._new_context(batch, run_id, ctx)
                batch.ctx_id.append(found)
            elif kind == kinds.LOOP:
                # Loop columns exist as soon as a loop ran, even before anything was logged.
                if body[2] not in self._loop_pos and is_name(body[2]):
                    self._loop_index(body[2], len(body[3]) - 1)
            elif kind == kinds.RUN_RESUME:
                self._flush(batch)
                self._supersede(base + i, body)
            elif kind == kinds.REPLAY_END:
                self._replay_end(_as_lists(body))

    def _resolve_contexts(self, batch: Batch) -> None:
        """Give every batched value without one its context id, numbering new ones in order.

        Contexts are kept per run, keyed by ctx as decoded (tuples, hence hashable): each run's
        stretch of values is looked up in bulk with `map`; only misses (new contexts) run
        Python code.
        """
        start = len(batch.ctx_id)
        pending = batch.bodies[start:]
        if not pending:
            return
        run_ids = list(map(_run_id, pending))
        ctxs = list(map(_ctx, pending))
        bounds = [0]
        if run_ids.count(run_ids[0]) != len(run_ids):
            bounds += compress(range(1, len(run_ids)), map(ne, run_ids[1:], run_ids[:-1]))
        bounds.append(len(run_ids))
        ids: list = []
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            run_id = run_ids[lo]
            known = self._contexts.setdefault(run_id, {})
            got = list(map(known.get, ctxs[lo:hi]))
            if None in got:
                for i in compress(range(len(got)), map(is_, got, repeat(None))):
                    found = known.get(ctxs[lo + i])
                    got[i] = (
                        found
                        if found is not None
                        else self._new_context(batch, run_id, ctxs[lo + i])
                    )
            ids += got
        batch.ctx_id.extend(ids)

    def _new_context(self, batch: Batch, run_id: str, ctx: tuple) -> int:
        self._next_ctx_id += 1
        ctx_id = self._contexts.setdefault(run_id, {})[ctx] = self._next_ctx_id
        names = tuple(map(_first, ctx))
        if names not in self._shape_slots and not all(map(is_name, names)):
            self._bad_contexts.add(ctx_id)  # invariant 4: its values are skipped
            return ctx_id
        slots = self._shape_slots.get(names)
        if slots is None:  # _loop_index per shape, not per context: same slots, same depths
            slots = tuple(self._loop_index(name, depth) for depth, name in enumerate(names))
            self._shape_slots[names] = slots
        row = dict(zip(slots, map(_third, ctx), strict=True))
        # The persisted key keeps the form (run_id, level, level, ...) older caches stored.
        text = repr((run_id, *(tuple(level) for level in ctx))) if self.persistent else None
        batch.new_contexts.append((ctx_id, run_id, row, text))
        return ctx_id

    # --- flushing a batch ---------------------------------------------------------------------

    def _widen_loop(self, k: int) -> None:
        """Loop slot `k` saw a str: its columns become VARCHAR from now on."""
        self.loop_types[k] = "VARCHAR"
        for table in ("_contexts", "_values"):
            self.con.execute(f"ALTER TABLE {table} ALTER COLUMN {_loop_col(k)} TYPE VARCHAR")

    def _contexts_table(self, contexts: list) -> Any:
        rows = list(map(_third, contexts))
        cols = {
            "ctx_id": columns.int_column(list(map(_first, contexts))),
            "run_id": columns.string_column(list(map(_second, contexts))),
            "ctx_key": columns.string_column(list(map(_fourth, contexts))),
        }
        for k in range(len(self.loop_types)):
            raw = list(map(methodcaller("get", k), rows))
            types = set(map(type, raw))
            if str in types and self.loop_types[k] == "BIGINT":
                self._widen_loop(k)
            if self.loop_types[k] == "VARCHAR":
                if types - {str, type(None)}:
                    raw = [None if v is None else str(v) for v in raw]
                cols[_loop_col(k)] = columns.string_column(raw)
            else:
                if bool in types:
                    raw = [int(v) if isinstance(v, bool) else v for v in raw]
                cols[_loop_col(k)] = columns.int_column(raw)
        return columns.table(cols)

    # --- the wide form: one column per logged name in _contexts --------------------------------

    def name_slot(self, name: str) -> str:
        """The `_contexts` column holding `name`'s last value per context."""
        return f"__n{self.name_slots[name]}"

    def _ensure_name_columns(self, names: list[tuple[str, bool]]) -> None:
        """Add a column per new name; widen a DOUBLE column to VARCHAR once text appears."""
        for name, has_text in names:
            if name not in self.name_slots:
                self.name_slots[name] = len(self.name_slots)
                typ = "VARCHAR" if has_text else "DOUBLE"
                self.con.execute(f"ALTER TABLE _contexts ADD COLUMN {self.name_slot(name)} {typ}")
            elif has_text and name not in self.text_names:
                self.con.execute(
                    f"ALTER TABLE _contexts ALTER COLUMN {self.name_slot(name)} TYPE VARCHAR"
                )
            if has_text:
                self.text_names.add(name)

    def _pivot_sql(self, names: list[str], source: str, where: str = "") -> str:
        """SELECT ctx_id and each name's last non-NULL value (highest LSN) per context."""
        aggs = []
        for name in names:
            text = name in self.text_names
            value = "coalesce(value_text, CAST(value AS VARCHAR))" if text else "value"
            aggs.append(
                f"arg_max({value}, lsn) FILTER (WHERE name = {_literal(name)}) "
                f"AS {self.name_slot(name)}"
            )
        return f"SELECT ctx_id, {', '.join(aggs)} FROM {source} {where} GROUP BY ctx_id"

    def _update_from_pivot(self, names: list[str], keep_old: bool, where: str = "") -> None:
        sets = ", ".join(
            f"{slot} = coalesce(p.{slot}, _contexts.{slot})" if keep_old else f"{slot} = p.{slot}"
            for slot in (self.name_slot(n) for n in names)
        )
        self.con.execute(
            f"UPDATE _contexts SET {sets} FROM __pivot p WHERE _contexts.ctx_id = p.ctx_id {where}"
        )

    def _reuse_known_contexts(self, batch: Batch) -> None:
        """After a restore, a "new" context may already be in `_contexts`: use its id."""
        keys = columns.table(
            {
                "ctx_id": columns.int_column([c[0] for c in batch.new_contexts]),
                "ctx_key": columns.string_column([c[3] for c in batch.new_contexts]),
            }
        )
        self.con.register("__new_contexts", keys)
        try:
            known = dict(
                self.con.execute(
                    "SELECT n.ctx_id, c.ctx_id FROM __new_contexts n "
                    "JOIN _contexts c ON c.ctx_key = n.ctx_key"
                ).fetchall()
            )
        finally:
            self.con.unregister("__new_contexts")
        if not known:
            return
        batch.ctx_id[:] = [known.get(i, i) for i in batch.ctx_id]
        batch.new_contexts = [c for c in batch.new_contexts if c[0] not in known]
        for by_ctx in self._contexts.values():
            for ctx, ctx_id in list(by_ctx.items()):
                if ctx_id in known:
                    by_ctx[ctx] = known[ctx_id]

    def _flush(self, batch: Batch) -> None:
        self._resolve_contexts(batch)
        for bad in batch.drop_invalid(self._bad_contexts):
            self._warn_skipped(bad)
        if batch.new_contexts and self._partial_contexts:
            self._reuse_known_contexts(batch)
        new_contexts, batch.new_contexts = batch.new_contexts, []
        if not len(batch):
            if new_contexts:
                self._insert_contexts(new_contexts, [])
            return
        first_new = min((c[0] for c in new_contexts), default=None)
        self.con.register("__ingest_values", batch.to_arrow())
        try:
            stats = self.con.execute(
                "SELECT name, count(*), count(value_text) FROM __ingest_values "
                "GROUP BY name ORDER BY name"
            ).fetchall()
            names = [row[0] for row in stats]
            self._ensure_name_columns([(row[0], row[2] > 0) for row in stats])
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE __pivot AS "
                + self._pivot_sql(names, "__ingest_values")
            )
            if new_contexts:
                self._insert_contexts(new_contexts, names)
            if first_new is None or min(batch.ctx_id) < first_new:
                older = "" if first_new is None else f"AND p.ctx_id < {first_new}"
                self._update_from_pivot(names, keep_old=True, where=older)
            self._insert_values(min(batch.ctx_id))
        finally:
            self.con.unregister("__ingest_values")
            self.con.execute("DROP TABLE IF EXISTS __pivot")
        for name, n, _n_text in stats:
            self.names[name] += n
        batch.clear()

    def _warn_skipped(self, name: Any) -> None:
        key = repr(name)
        if key not in self._warned_names:
            self._warned_names.add(key)
            print(
                f"florql: warning: skipping values stored under the name or loop {key:.80}, "
                "which cannot be a SQL column (recorded by an older florql)",
                file=sys.stderr,
            )

    def _insert_contexts(self, contexts: list, names: list[str]) -> None:
        """Insert new contexts with the batch's pivoted values (`__pivot`) for `names`."""
        self.con.register("__ingest_contexts", self._contexts_table(contexts))
        try:
            picked = "".join(f", p.{self.name_slot(n)}" for n in names)
            joined = " LEFT JOIN __pivot p USING (ctx_id)" if names else ""
            self.con.execute(
                f"INSERT INTO _contexts BY NAME SELECT n.*{picked} FROM __ingest_contexts n{joined}"
            )
        finally:
            self.con.unregister("__ingest_contexts")

    def _insert_values(self, low: int) -> None:
        loops = "".join(f", c.{_loop_col(k)}" for k in range(len(self.loops)))
        first = self.con.execute("SELECT min(lsn) FROM __ingest_values").fetchall()[0][0]
        self.con.execute(
            "INSERT INTO _values BY NAME SELECT c.run_id, i.lsn, i.seq, i.ctx_id, i.name, "
            "i.value, i.value_text, make_timestamp(CAST(i.t * 1000000 AS BIGINT)) AS logged_at, "
            f"i.replay_id{loops} FROM __ingest_values i "
            f"JOIN (SELECT * FROM _contexts WHERE ctx_id >= {low}) c USING (ctx_id)"
        )
        # One pass over the new rows: values per run, and the names each run logged itself.
        per_run_name = self.con.execute(
            "SELECT run_id, name, count(*), bool_or(replay_id = '') FROM _values "
            f"WHERE lsn >= {first} GROUP BY run_id, name"
        ).fetchall()
        for run_id, name, n, recorded in per_run_name:
            self.values_per_run[run_id] += n
            if recorded:
                self.recorded_by_run.setdefault(run_id, set()).add(name)

    # --- records that change what is visible --------------------------------------------------

    def _supersede(self, lsn: int, body: dict) -> None:
        run_id, seq = body["run_id"], body["seq"]
        where = "run_id = ? AND seq > ? AND lsn < ?"
        params = [run_id, seq, lsn]
        gone = self.con.execute(
            f"SELECT name, count(*) FROM _values WHERE {where} GROUP BY name", params
        ).fetchall()
        if not gone:
            return
        self.con.execute(f"DELETE FROM _values WHERE {where}", params)
        self._repivot_run(run_id)
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
            ids = [row[0] for row in empty]
            self.con.execute(
                "DELETE FROM _contexts WHERE ctx_id IN (SELECT unnest(?::BIGINT[]))", [ids]
            )
            dropped = set(ids)
            kept = self._contexts.get(run_id, {})
            self._contexts[run_id] = {k: v for k, v in kept.items() if v not in dropped}

    def _repivot_run(self, run_id: str) -> None:
        """Recompute a run's wide columns from its remaining values (after a resume)."""
        names = sorted(self.name_slots)
        if not names:
            return
        cleared = ", ".join(f"{self.name_slot(n)} = NULL" for n in names)
        self.con.execute(f"UPDATE _contexts SET {cleared} WHERE run_id = ?", [run_id])
        where = f"WHERE run_id = {_literal(run_id)}"
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE __pivot AS " + self._pivot_sql(names, "_values", where)
        )
        try:
            self._update_from_pivot(names, keep_old=False)
        finally:
            self.con.execute("DROP TABLE IF EXISTS __pivot")

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

    # --- run metadata -------------------------------------------------------------------------

    def _refresh_runs(self, store: Store) -> None:
        runs = store.runs()
        signature = tuple(
            (r.run_id, r.status, r.last_lsn, self.values_per_run.get(r.run_id, 0))
            for r in runs.values()
        )
        if signature == self._runs_signature:
            return
        self._runs_signature = signature
        metadata.rebuild_runs(self.con, runs, self.values_per_run, store.checkpoints())
        self.args = metadata.rebuild_args(self.con, runs)
