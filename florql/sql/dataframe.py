"""`florql.dataframe(*names)`: FlorDB's `flor.dataframe`, a pandas frame of logged names.

One row per run and loop context of the deepest of the names; a name logged at an outer level
(per epoch, per run) is joined onto every row of the contexts inside it, as FlorDB does, so
`florql.dataframe("loss", "lr")` puts each epoch's `lr` beside each step's `loss`. Columns:
`run_id`, the loop columns down to that depth, then the names in the order given. A name no
run logged is replayed first when the current script logs it (as any query).
"""

from __future__ import annotations

from typing import Any

from florql.errors import BadInputError
from florql.sql.views import quote


def dataframe_sql(names: list[str], loops: list[str], depths: dict[str, int]) -> str:
    """The query behind `dataframe`, given each name's loop depth (0: per run).

    >>> print(dataframe_sql(["loss", "acc"], ["epoch", "step"], {"loss": 2, "acc": 1}))
    SELECT b.run_id, b."epoch", b."step", n0."loss", n1."acc" FROM (SELECT DISTINCT run_id, "epoch", "step" FROM logs WHERE "loss" IS NOT NULL) b LEFT JOIN (SELECT run_id, "epoch", "step", "loss" FROM logs WHERE "loss" IS NOT NULL) n0 ON n0.run_id = b.run_id AND n0."epoch" IS NOT DISTINCT FROM b."epoch" AND n0."step" IS NOT DISTINCT FROM b."step" LEFT JOIN (SELECT run_id, "epoch", "acc" FROM logs WHERE "acc" IS NOT NULL AND "step" IS NULL) n1 ON n1.run_id = b.run_id AND n1."epoch" IS NOT DISTINCT FROM b."epoch" ORDER BY b.run_id, b."epoch", b."step"
    """
    deepest = max(depths.values())
    base_loops = loops[:deepest]
    at_base = " OR ".join(f"{quote(n)} IS NOT NULL" for n in names if depths[n] == deepest)
    sel = ", ".join(["run_id", *map(quote, base_loops)])
    parts = [f"FROM (SELECT DISTINCT {sel} FROM logs WHERE {at_base}) b"]
    cols = ["b.run_id", *(f"b.{quote(lp)}" for lp in base_loops)]
    for i, name in enumerate(names):
        own = loops[: depths[name]]
        inner = loops[depths[name] : depths[name] + 1]  # rows of this level only
        where = f"{quote(name)} IS NOT NULL"
        if inner:
            where += f" AND {quote(inner[0])} IS NULL"
        sub = ", ".join(["run_id", *map(quote, own), quote(name)])
        on = [f"n{i}.run_id = b.run_id"]
        on += [f"n{i}.{quote(lp)} IS NOT DISTINCT FROM b.{quote(lp)}" for lp in own]
        parts.append(f"LEFT JOIN (SELECT {sub} FROM logs WHERE {where}) n{i} ON {' AND '.join(on)}")
        cols.append(f"n{i}.{quote(name)}")
    order = ", ".join(cols[: 1 + len(base_loops)])
    return f"SELECT {', '.join(cols)} {' '.join(parts)} ORDER BY {order}"


def dataframe(*names: str, store: str | None = None) -> Any:
    """A pandas DataFrame of `names` with run and loop columns (see the module docstring).

    Raises:
        BadInputError: no names, or a name given twice.
        QueryError: a name no run logged and no current script logs.
    """
    from florql.sql.connection import connect

    if not names:
        raise BadInputError("florql.dataframe needs at least one name, e.g. dataframe('loss')")
    if len(set(names)) != len(names):
        raise BadInputError("florql.dataframe: each name once, please")
    con = connect(store)
    try:
        # Asking for the names first makes florql replay the ones no run logged.
        con.sql(f"SELECT {', '.join(map(quote, names))} FROM logs LIMIT 0").fetchall()
        loops = list(con.catalog().loops)
        depths = {n: _depth(con, n, loops) for n in names}
        return con.sql(dataframe_sql(list(names), loops, depths)).df()
    finally:
        con.close()


def _depth(con: Any, name: str, loops: list[str]) -> int:
    """How many loop columns are set where `name` is logged (its deepest context)."""
    if not loops:
        return 0
    depth = " + ".join(f"({quote(lp)} IS NOT NULL)::INT" for lp in loops)
    rows = con.sql(f"SELECT max({depth}) FROM logs WHERE {quote(name)} IS NOT NULL").fetchall()
    return int(rows[0][0] or 0)
