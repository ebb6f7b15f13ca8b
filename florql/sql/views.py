"""The four read-only views, defined over the cache's internal tables (see `cache.py`).

`logs` is a projection of the cache's wide table (`_contexts`, one column per logged name, kept
current at ingest by `cache.py`); it is redefined for each query with the names that query
references, plus NULL columns for names asked for that no run logged.

Decisions, also in the README:
- `logs` has one row per run and loop context in which anything was logged, whichever names the
  query selects. A name's column is DOUBLE when every value it ever had is a number or a bool
  (bools count as numbers: 1.0 / 0.0, so `avg(correct)` works) or None; otherwise VARCHAR: strings
  as they are, lists and dicts as JSON text, numbers in their text form. A name logged several
  times in one context shows its last non-NULL value (highest LSN). A name a query asked for that
  no run logged (after a replay that produced nothing for it) is a column of NULLs.
- Collisions: loop columns and `run_id` keep their names; a logged name equal to one of them is
  `log_<name>`; an arg whose name is taken is `arg_<name>` (see `catalog.py`).
- `records.value` is DOUBLE (numbers and bools; NULL otherwise), `records.value_text` holds the
  text of other values; `source` is `record` or `replay`; `diverged` is true for values of a
  replay whose fidelity check found a mismatch.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from florql.sql.cache import Cache
from florql.sql.catalog import Catalog


def quote(identifier: str) -> str:
    """A DuckDB identifier in double quotes.

    >>> quote('grad"norm')
    '"grad""norm"'
    """
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A DuckDB string literal.

    >>> literal("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"


def catalog_of(cache: Cache, extra_names: Iterable[str] = ()) -> Catalog:
    """The catalog of what `cache` holds now, plus `extra_names` shown as NULL columns."""
    names = frozenset(n for n, count in cache.names.items() if count > 0)
    return Catalog(
        names=names,
        loops=tuple(cache.ordered_loops()),
        args=tuple(cache.args),
        runs=tuple(sorted(cache.values_per_run)),
        extra_names=frozenset(extra_names) - names,
    )


def logs_sql(cache: Cache, catalog: Catalog, names: Iterable[str]) -> str:
    """SELECT text of the `logs` view holding the columns of `names` (and all loop/arg columns).

    The cache keeps the wide form up to date at ingest (`_contexts.__nK`), so the view only
    picks columns: no pivot at query time.
    """
    wanted = sorted(set(names) & set(catalog.all_names()))
    cols = ["c.run_id AS run_id"]
    cols += [f"c.{cache.loop_slot(loop)} AS {quote(loop)}" for loop in catalog.loops]
    for name in wanted:
        column = quote(catalog.logs_name_column(name))
        if name in cache.name_slots and name in catalog.names:
            cols.append(f"c.{cache.name_slot(name)} AS {column}")
        else:
            cols.append(f"CAST(NULL AS DOUBLE) AS {column}")
    cols += [
        f"a.__a{k} AS {quote(catalog.logs_arg_column(arg))}" for k, arg in enumerate(catalog.args)
    ]
    sql = f"SELECT {', '.join(cols)} FROM _contexts c"
    if catalog.args:
        sql += " LEFT JOIN _args a ON a.run_id = c.run_id"
    return sql


def records_sql(cache: Cache, catalog: Catalog) -> str:
    loops = [
        f"v.{cache.loop_slot(loop)} AS {quote(catalog.records_loop_column(loop))}"
        for loop in catalog.loops
    ]
    cols = [
        "v.run_id",
        "v.lsn",
        *loops,
        "v.name",
        "v.value",
        "v.value_text",
        "CASE WHEN v.replay_id = '' THEN 'record' ELSE 'replay' END AS source",
        "v.logged_at",
        "v.seq",
        "NULLIF(v.replay_id, '') AS replay_id",
        "(v.replay_id <> '' AND v.replay_id IN "
        "(SELECT replay_id FROM _replays WHERE diverged)) AS diverged",
    ]
    return f"SELECT {', '.join(cols)} FROM _values v"


def checkpoints_sql(cache: Cache, catalog: Catalog) -> str:
    fixed = {
        "ckpt_id",
        "run_id",
        "phase",
        "ctx",
        "raw_bytes",
        "stored_bytes",
        "write_seconds",
        "lsn",
        "seq",
    }
    loops = [
        f"{cache.loop_slot(loop)} AS {quote(loop)}" for loop in catalog.loops if loop not in fixed
    ]
    cols = ["ckpt_id", "run_id", *loops, "phase", "ctx", "raw_bytes", "stored_bytes"]
    cols += ["write_seconds", "lsn", "seq"]
    return f"SELECT {', '.join(cols)} FROM _checkpoints"


def define_views(
    con: duckdb.DuckDBPyConnection, cache: Cache, catalog: Catalog, names: Iterable[str]
) -> None:
    """(Re)create the four views for a query that references `names`."""
    con.execute(f"CREATE OR REPLACE VIEW logs AS {logs_sql(cache, catalog, names)}")
    con.execute(f"CREATE OR REPLACE VIEW records AS {records_sql(cache, catalog)}")
    con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
    con.execute(f"CREATE OR REPLACE VIEW checkpoints AS {checkpoints_sql(cache, catalog)}")
