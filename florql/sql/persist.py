"""The CLI's on-disk query cache: one DuckDB file per store, outside the store.

`florql query` is a new process each time; without this file it would decode the whole log on
every call. The cache is derived data, never the truth:

- it lives outside the store (`$FLORQL_CACHE_DIR`, else `$XDG_CACHE_HOME/florql/sql`, else
  `~/.cache/florql/sql`), named by the store's id, so it can be deleted at any time;
- its state (what was ingested, up to which LSN) is a row in the same database, written in the
  same transaction as the rows it describes;
- it is used only if that state names the same store id and the record at its last LSN still
  hashes to what it ingested (a replaced or rolled-back store fails this), else rebuilt;
- only one process uses it at a time (DuckDB's file lock); another process that finds it locked
  falls back to an in-memory cache.

>>> fingerprint_of(3, {"run_id": "r1"}) == fingerprint_of(3, {"run_id": "r1"})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import TYPE_CHECKING, Any

import duckdb

from florql.config import cache_dir

if TYPE_CHECKING:
    from florql_storage import Store

STATE_VERSION = 4  # 2: wide form (name columns in _contexts); 3: names recorded per run;
# 4: _runs shows the command line, versions, host, rank, world size and degradation


def temp_dir() -> str:
    """DuckDB's spill folder: `tmp` beside the cache files, private to this user.

    DuckDB lets a query read its temporary folder even with external access off, and an
    in-memory database's default is `.tmp` in the working folder (the user's files): it must
    be a folder that holds nothing but DuckDB's own spill files.

    Raises:
        OSError: the folder exists but belongs to another user or others may enter it.
    """
    path = os.path.join(cache_dir(), "tmp")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a folder private to this user")
    return path


def store_id_of(store: Store) -> str | None:
    """The store's id as hex (from its manifest), or None if it cannot be told."""
    manifest = getattr(store, "_manifest", None)
    store_id = getattr(manifest, "store_id", None)
    return store_id.hex() if isinstance(store_id, (bytes, bytearray)) else None


def fingerprint_of(kind: int, body: Any) -> str:
    return hashlib.sha256(repr((kind, body)).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def fingerprint_at(store: Store, lsn: int) -> str | None:
    """The fingerprint of the record at `lsn`, or None if the store has no such record."""
    if lsn <= 0:
        return ""
    for rec in store.scan(from_lsn=lsn):
        return fingerprint_of(rec.kind, rec.body) if rec.lsn == lsn else None
    return None


def open_database(path: str, config: dict) -> duckdb.DuckDBPyConnection | None:
    """Open (creating) the cache database, or None when another process holds it."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return duckdb.connect(path, config=dict(config))
    except (duckdb.Error, OSError):
        return None


def load_state(con: duckdb.DuckDBPyConnection, store: Store) -> dict | None:
    """The state saved in the cache database if it is valid for `store` as it is now."""
    try:
        rows = con.execute("SELECT state FROM _florql_state").fetchall()
        state = json.loads(rows[0][0]) if rows else None
    except (duckdb.Error, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None
    if state.get("store_id") != store_id_of(store):
        return None
    lsn = state.get("last_lsn")
    if not isinstance(lsn, int) or lsn > store.last_lsn:
        return None
    if fingerprint_at(store, lsn) != state.get("fingerprint"):
        return None
    return state


def save_state(con: duckdb.DuckDBPyConnection, state: dict) -> None:
    """Store the state in the cache database; call inside the refresh's transaction, so that
    tables and state always agree (a crash loses both or neither)."""
    text = json.dumps({**state, "version": STATE_VERSION}, default=str)
    con.execute("CREATE OR REPLACE TABLE _florql_state (state VARCHAR)")
    con.execute("INSERT INTO _florql_state VALUES (?)", [text])
