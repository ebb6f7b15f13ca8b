"""florql's storage engine (import name `florql_storage`): bytes, LSNs, records and pages.

See FORMAT.md beside this file for the on-disk layout and docs/INTERFACES.md §1 for the API.
This package never imports florql, torch or DuckDB.

>>> from florql_storage import Store, kinds
>>> from florql_storage.fs import MemFS
>>> with Store.open("/demo", fs=MemFS()) as store:
...     w = store.writer()
...     w.append(kinds.VALUE, ["r", 1, "loss", 0.5, [], 0.0, ""])
...     w.flush(), [r.body[2] for r in store.scan(kinds=[kinds.VALUE])]
(1, ['loss'])
"""

from . import kinds
from .errors import BadInputError, CorruptionError, FlorqlError, StoreError
from .records import CheckpointInfo, Problem, Record, RunInfo
from .store import Store
from .writer import LogWriter

__all__ = [
    "BadInputError",
    "CheckpointInfo",
    "CorruptionError",
    "FlorqlError",
    "LogWriter",
    "Problem",
    "Record",
    "RunInfo",
    "Store",
    "StoreError",
    "kinds",
]
