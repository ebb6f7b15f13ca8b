"""Writing a query result to a file: `florql query --format F -o FILE` and `Relation.to_*`.

Files are written by pyarrow from the result in memory, never by DuckDB (whose file access the
SQL walls keep off). A file is written to a temporary name beside it, then renamed, so a failed
write never leaves half a file under the asked name.
"""

from __future__ import annotations

import os
import tempfile

import pyarrow as pa

from florql.errors import BadInputError


def write_table(table: pa.Table, fmt: str, path: str | os.PathLike | None) -> str:
    """Write `table` as `fmt` (parquet, csv, json, table) to `path`; return the path.

    Raises:
        BadInputError: no path for parquet, or a path whose folder does not exist.
    """
    if path is None:
        raise BadInputError("--format parquet writes a file: add -o FILE.parquet")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInputError(f"cannot write {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".florql-", suffix=".tmp")
    os.close(fd)
    try:
        _write(table, fmt, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write(table: pa.Table, fmt: str, path: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return
    from florql.sql.format import format_result

    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(format_result(table, fmt))
