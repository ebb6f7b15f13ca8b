"""florql: hindsight logging for PyTorch training.

The training-script API (`log`, `arg`, `args`, `loop`, `checkpointing`) and the query API
(`connect`, `sql`). Importing florql does not import torch: the query path starts fast.
"""

from __future__ import annotations

from typing import Any

from florql.api import arg, args, checkpointing, log, loop

__version__ = "0.1.0"
__all__ = ["arg", "args", "checkpointing", "connect", "dataframe", "log", "loop", "sql"]


def connect(store: str | None = None, **options: Any) -> Any:
    """Open a read-only SQL connection to a store (default `$FLORQL_STORE` or `./.florql`).

    Options (keyword-only): replay, workers, tolerance, allow_damage (see README: Querying,
    Damage)."""
    from florql.sql.connection import connect as _connect

    return _connect(store, **options)


def sql(query: str) -> Any:
    """Run `query` on the default connection; returns a lazy relation (`df()`, `fetchall()`...)."""
    from florql.sql.connection import default_connection

    return default_connection().sql(query)


def dataframe(*names: str, store: str | None = None) -> Any:
    """FlorDB's `flor.dataframe`: a pandas frame of `names` with run and loop columns, outer
    values joined onto inner rows (florql/sql/dataframe.py)."""
    from florql.sql.dataframe import dataframe as _dataframe

    return _dataframe(*names, store=store)
