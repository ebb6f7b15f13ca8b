"""`florql plot`: a static chart (PNG or SVG) drawn by matplotlib, for scripts, papers and CI.

From names: one panel per name, one line per run against `--x` (a loop column or
`global_step`, as in the UI); with `--by COL` (a loop column or an arg), one line per value of
COL against a loop column (`--by epoch --x step`, `--by lr --x epoch`), averaged over runs. From `--sql`: the query's first column is x,
every other numeric column a line; a `run_id` column, when present, splits lines by run.
Series are reduced in DuckDB exactly as the UI's charts are (florql/ui/series.py).
"""

from __future__ import annotations

import os
from typing import Any

from florql.errors import BadInputError, QueryError
from florql.sql.connection import Connection
from florql.ui import series

FORMATS = (".png", ".svg")
WIDTH = 1000  # pixel buckets per panel: more than the figure shows


def plot(
    store: str,
    *,
    names: list[str],
    output: str,
    by: str = "run_id",
    x: str = series.GLOBAL_STEP,
    sql: str | None = None,
    log_y: bool = False,
) -> str:
    """Draw the chart into `output` (.png or .svg); return its path.

    Raises:
        BadInputError: no names and no SQL, both, an unknown extension, or an unknown column.
        QueryError: the SQL fails, or a name was never logged.
    """
    ext = os.path.splitext(output)[1].lower()
    if ext not in FORMATS:
        raise BadInputError(f"-o {output}: the file must end in .png or .svg")
    if bool(names) == bool(sql):
        raise BadInputError("give variable names (`florql plot loss`) or --sql, not both")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise BadInputError(f"cannot write {output}: the folder {folder} does not exist")
    con = Connection(store, replay=False)
    try:
        panels = _from_sql(con, sql) if sql else _from_names(con, names, by, x)
    finally:
        con.close()
    _draw(panels, output, log_y)
    return output


Panel = tuple[str, str, dict[str, tuple[list[float], list[float]]]]  # title, x label, lines


def _from_names(con: Connection, names: list[str], by: str, x: str) -> list[Panel]:
    known = {n["name"] for n in series.names(con)}
    panels = []
    for name in names:
        if name not in known:
            raise QueryError(
                f'no run logged a numeric {name!r}; `florql query "SELECT DISTINCT name '
                'FROM records"` lists the names'
            )
        if by != "run_id":
            panels += _from_sql(con, _by_sql(con, name, by, x), group=by)
            continue
        data = series.read_series(con, series.SeriesRequest(name, x, (), WIDTH))
        lines = {rid: (xs, ys) for rid, (xs, ys) in data["runs"].items()}
        panels.append((name, x, lines))
    return panels


def _by_sql(con: Connection, name: str, by: str, x: str) -> str:
    """`name` against loop column `x` from `logs`, one line per value of column `by` (a loop
    column or an arg: `--by epoch --x step`, `--by lr --x epoch`), averaged over runs."""
    loops = series.loop_columns(con)
    if x not in loops:
        raise BadInputError(f"--by {by} needs --x to be a loop column, one of: {', '.join(loops)}")
    cols = con.sql("SELECT * FROM logs LIMIT 0").columns
    if by not in cols or by == name:
        raise BadInputError(f"--by {by} is not a column of logs (a loop column or an arg)")
    q = series.quote_ident
    return (
        f"SELECT {q(x)}, {q(by)}, avg({q(name)}) AS {q(name)} FROM logs "
        f"WHERE {q(name)} IS NOT NULL GROUP BY ALL ORDER BY {q(by)}, {q(x)}"
    )


def _from_sql(con: Connection, sql: str, group: str = "run_id") -> list[Panel]:
    table = con.sql(sql).arrow()
    cols = table.column_names
    if len(cols) < 2:
        raise BadInputError("--sql must select an x column and at least one y column")
    data = {c: table.column(c).to_pylist() for c in cols}
    xcol = cols[0]
    ys = [c for c in cols[1:] if c != group and _numeric(data[c])]
    if not ys:
        raise BadInputError("--sql selects no numeric column to plot after the x column")
    groups = data.get(group) if group in cols and xcol != group else None
    lines: dict[str, tuple[list[float], list[float]]] = {}
    for y in ys:
        for i, (xv, yv) in enumerate(zip(data[xcol], data[y], strict=True)):
            if xv is None or yv is None:
                continue
            label = f"{_label(group, groups[i])} {y}" if groups else y
            xs_, ys_ = lines.setdefault(label, ([], []))
            xs_.append(xv)
            ys_.append(yv)
    return [(", ".join(ys), xcol, lines)]


def _label(group: str, value: Any) -> str:
    return str(value) if group == "run_id" else f"{group}={value}"


def _numeric(values: list[Any]) -> bool:
    return any(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _draw(panels: list[Panel], output: str, log_y: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed: a file is the product
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, xlabel, lines) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in sorted(lines.items()):
            ax.plot(xs, ys, label=label, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if 1 < len(lines) <= 12:
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
