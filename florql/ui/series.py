"""The SQL behind the UI's charts and runs table, run through the read-only `Connection`.

A chart never ships raw values: each run's series is reduced in DuckDB to at most two points
per pixel bucket (the minimum and the maximum of the bucket, at their own x), so a run with
10M values reaches the browser as a few thousand points and its peaks stay visible.

The x axis is a loop column (`epoch`, `step`) or `global_step`: the 0-based position of the
value among that name's values of the run, in log order, a per-run monotone step that does
not restart each epoch. Against a loop column, a run has one point per value of that column:
the mean of the name's values there (loss per step against epoch: the epoch's mean loss).

>>> quote_literal("it's")
"'it''s'"
>>> quote_ident('a"b')
'"a""b"'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from florql.errors import BadInputError

GLOBAL_STEP = "global_step"
MAX_WIDTH = 4000  # pixel buckets a request may ask for


def quote_literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(text: str) -> str:
    """`text` as a SQL identifier."""
    return '"' + text.replace('"', '""') + '"'


@dataclass(frozen=True)
class SeriesRequest:
    """One chart: `name` against `x` for `runs` (all runs when empty), `width` buckets."""

    name: str
    x: str = GLOBAL_STEP
    runs: tuple[str, ...] = ()
    width: int = 800

    def checked(self, loops: list[str]) -> SeriesRequest:
        """This request, or BadInputError naming what is wrong with it."""
        if not self.name:
            raise BadInputError("a chart needs a variable name (?name=loss)")
        if self.x != GLOBAL_STEP and self.x not in loops:
            known = ", ".join([GLOBAL_STEP, *loops])
            raise BadInputError(f"x={self.x!r} is not a loop column; use one of: {known}")
        if not 1 <= self.width <= MAX_WIDTH:
            raise BadInputError(f"width={self.width} must be between 1 and {MAX_WIDTH}")
        return self


def series_sql(req: SeriesRequest) -> str:
    """The reduced series of `req` as SQL over `records`: rows (run_id, x, y), ordered.

    Each run keeps every point when it has at most 2*width of them, else the min and max of y
    in each of `width` equal x buckets.
    """
    x = (
        "row_number() OVER (PARTITION BY run_id ORDER BY lsn) - 1"
        if req.x == GLOBAL_STEP
        else (f"CAST({quote_ident(req.x)} AS DOUBLE)")
    )
    runs = ""
    if req.runs:
        runs = f" AND run_id IN ({', '.join(quote_literal(r) for r in req.runs)})"
    w = req.width
    # Against a loop column, a name logged several times per value of it (loss per step
    # against epoch) is one point per value: the mean.
    per_x = (
        "SELECT * FROM v"
        if req.x == GLOBAL_STEP
        else ("SELECT run_id, x, avg(y) AS y, min(lsn) AS lsn FROM v GROUP BY run_id, x")
    )
    return f"""
WITH v AS (
  SELECT run_id, {x} AS x, value AS y, lsn FROM records
  WHERE name = {quote_literal(req.name)} AND isfinite(value){runs}
),
s AS ({per_x}),
-- Per-run extent as a grouped join, not window aggregates: a third faster over 10M values.
st AS (
  SELECT run_id, count(*) AS n, min(x) AS x0, max(x) AS x1 FROM s WHERE x IS NOT NULL
  GROUP BY run_id
),
b AS (
  SELECT s.run_id, x, y, lsn, n,
         CASE WHEN n <= {2 * w} OR x1 = x0 THEN lsn
              ELSE least(floor((x - x0) / (x1 - x0) * {w}), {w - 1}) END AS bucket
  FROM s JOIN st USING (run_id) WHERE x IS NOT NULL
),
k AS (
  SELECT run_id, bucket, arg_min(x, y) AS xlo, min(y) AS ylo, arg_max(x, y) AS xhi,
         max(y) AS yhi, min(lsn) AS first_lsn
  FROM b GROUP BY run_id, bucket
)
SELECT run_id, xlo AS x, ylo AS y FROM k
UNION
SELECT run_id, xhi AS x, yhi AS y FROM k
ORDER BY run_id, x
"""


def read_series(con: Any, req: SeriesRequest) -> dict[str, Any]:
    """{"name", "x", "runs": {run_id: [[x...], [y...]]}, "points"} for one chart."""
    loops = loop_columns(con)
    rows = con.sql(series_sql(req.checked(loops))).fetchall()
    runs: dict[str, list[list[float]]] = {}
    for run_id, x, y in rows:
        xs, ys = runs.setdefault(run_id, [[], []])
        xs.append(x)
        ys.append(y)
    return {"name": req.name, "x": req.x, "runs": runs, "points": len(rows)}


def loop_columns(con: Any) -> list[str]:
    """The loop names of the store (the `records` columns between `lsn` and `name`)."""
    cols = con.sql("SELECT * FROM records LIMIT 0").columns
    return cols[cols.index("lsn") + 1 : cols.index("name")] if "name" in cols else []


def names(con: Any) -> list[dict[str, Any]]:
    """Every numeric name with its count and the loop columns it is logged under."""
    loops = loop_columns(con)
    depth = " + ".join(f"({quote_ident(c)} IS NOT NULL)::INT" for c in loops) or "0"
    rows = con.sql(
        f"SELECT name, count(*) AS n, max({depth}) AS depth FROM records "
        "WHERE value IS NOT NULL GROUP BY name ORDER BY name"
    ).fetchall()
    return [{"name": n, "count": c, "loops": loops[: int(d)]} for n, c, d in rows]


def runs_table(con: Any, metrics: list[str]) -> dict[str, Any]:
    """The runs with status, script, args, times, and last/min/max of each metric."""
    rel = con.sql("SELECT * FROM runs ORDER BY started_at")
    cols = rel.columns
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    stats: dict[tuple[str, str], dict[str, float]] = {}
    if metrics:
        in_list = ", ".join(quote_literal(m) for m in metrics)
        for run_id, name, last, lo, hi in con.sql(
            "SELECT run_id, name, arg_max(value, lsn), min(value), max(value) FROM records "
            f"WHERE name IN ({in_list}) AND isfinite(value) GROUP BY run_id, name"
        ).fetchall():
            stats[(run_id, name)] = {"last": last, "min": lo, "max": hi}
    out = []
    for row in rows:
        rid = row["run_id"]
        out.append(
            {
                "run_id": rid,
                "status": row.get("status"),
                "script": row.get("script"),
                "args": _plain(row.get("args")),
                "started_at": _seconds(row.get("started_at")),
                "ended_at": _seconds(row.get("ended_at")),
                "metrics": {m: stats.get((rid, m)) for m in metrics},
            }
        )
    return {"runs": out, "metrics": metrics}


def _seconds(t: Any) -> float | None:
    """A timestamp as Unix seconds (the runs view may hold a datetime or a number)."""
    if t is None:
        return None
    if hasattr(t, "timestamp"):
        return float(t.timestamp())
    return float(t)


def _plain(v: Any) -> Any:
    """`v` as JSON-ready data (args may hold anything florql.log stores)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else str(v)
    return str(v)
