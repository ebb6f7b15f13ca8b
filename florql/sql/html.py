"""A query result as an HTML table, for notebooks (`Relation._repr_html_`).

Every cell is escaped: logged strings are data, never markup.

>>> import pyarrow as pa
>>> print(html_table(pa.table({"name": ["<b>"], "v": [1.5]})))
<table class="florql"><thead><tr><th>name</th><th>v</th></tr></thead><tbody>
<tr><td>&lt;b&gt;</td><td style="text-align:right">1.5</td></tr>
</tbody></table><p>1 row</p>
"""

from __future__ import annotations

import html
from typing import Any

import pyarrow as pa

MAX_ROWS = 50


def html_table(table: pa.Table, max_rows: int = MAX_ROWS) -> str:
    """`table`'s first `max_rows` rows as an HTML table, then its row count."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.column_names)
    rows = []
    for row in table.slice(0, max_rows).to_pylist():
        rows.append("<tr>" + "".join(_cell(v) for v in row.values()) + "</tr>")
    n = table.num_rows
    count = f"{n} row" + ("" if n == 1 else "s")
    if n > max_rows:
        count += f" ({max_rows} shown)"
    body = "\n".join(rows)
    return (
        f'<table class="florql"><thead><tr>{head}</tr></thead><tbody>\n{body}\n'
        f"</tbody></table><p>{count}</p>"
    )


def _cell(v: Any) -> str:
    if v is None:
        return "<td><i>NULL</i></td>"
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f'<td style="text-align:right">{html.escape(repr(v) if isinstance(v, float) else str(v))}</td>'
    return f"<td>{html.escape(str(v))}</td>"
