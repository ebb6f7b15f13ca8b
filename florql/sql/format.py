"""Printing query results: an aligned table for people, CSV and JSON for programs.

- table: header, rule, rows; numbers right-aligned, floats to 6 significant digits, NULL shown
  as `NULL`, long text cut at 60 characters; then the row count. At most `MAX_TABLE_ROWS` rows
  are printed (the count says how many there were; use csv or json for all of them).
- csv: RFC 4180 via the csv module, header first; NULL is an empty field; floats in full
  precision (repr); nan/inf as `nan`, `inf`, `-inf`; bools as `true`/`false`.
- json: one list of objects, one object per row, keys in column order; NaN and infinities become
  `null` (JSON has no such numbers); timestamps ISO 8601; bytes as hex.

>>> import pyarrow as pa
>>> t = pa.table({"epoch": [1, 2], "loss": [0.5, float("nan")], "tag": ["a", None]})
>>> print(format_table(t), end="")
epoch  loss  tag
-----  ----  ----
    1   0.5  a
    2   nan  NULL
(2 rows)
>>> print(format_csv(t), end="")
epoch,loss,tag
1,0.5,a
2,nan,
>>> format_json(t)
'[{"epoch": 1, "loss": 0.5, "tag": "a"}, {"epoch": 2, "loss": null, "tag": null}]\\n'
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
from typing import Any

import pyarrow as pa

MAX_TABLE_ROWS = 10_000
MAX_CELL = 60


def format_result(table: pa.Table, fmt: str) -> str:
    """Format `table` as `table`, `csv` or `json`."""
    if fmt == "csv":
        return format_csv(table)
    if fmt == "json":
        return format_json(table)
    return format_table(table)


def _rows(table: pa.Table, limit: int | None = None) -> list[list[Any]]:
    if limit is not None:
        table = table.slice(0, limit)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    text = value if isinstance(value, str) else json.dumps(_jsonable(value))
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(table: pa.Table) -> str:
    names = list(table.column_names)
    rows = _rows(table, MAX_TABLE_ROWS)
    cells = [[_cell(v) for v in row] for row in rows]
    right = [
        all(v is None or _is_number(v) for v in (row[i] for row in rows)) and rows != []
        for i in range(len(names))
    ]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(names), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    n = table.num_rows
    count = f"({n} row{'s' if n != 1 else ''})"
    if n > len(rows):
        count = f"({n} rows, first {len(rows)} shown; use --format csv or json for all)"
    out.append(count)
    return "\n".join(out) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, dict)):
        return json.dumps(_jsonable(value))
    return value


def format_csv(table: pa.Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in _rows(table):
        writer.writerow([_csv_value(v) for v in row])
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def format_json(table: pa.Table) -> str:
    names = list(table.column_names)
    objects = [{k: _jsonable(v) for k, v in zip(names, row, strict=True)} for row in _rows(table)]
    return json.dumps(objects, allow_nan=False) + "\n"
