"""florql's storage engine (import name `florql_storage`): bytes, LSNs, records and pages.

See FORMAT.md beside this file for the on-disk layout and docs/INTERFACES.md §1 for the API.
This package never imports florql, torch or DuckDB.

Modules, bottom up:

- `fs` (`fsbase`, `realfs`, `memfs`, `faultyfs`): the file-system interface and its real,
  in-memory (crash model) and fault-injecting implementations; nothing else touches files.
- `format`: constants and struct layouts shared by writer and reader; `kinds`: record kinds.
- `frame`: record framing (header, CRC32C, base LSN + count, msgpack payload, lz4).
- `segment`: segment headers and the frame scanner; `manifest`: MANIFEST and sealed files.
- `pages`: checkpoint pages (split, exact dedup by CRC key + compare, lz4 where it pays).
- `state`: what recovery derives (tail, sparse LSN index, runs, checkpoints, page catalog).
- `recovery`: the numbered invariants, index-checkpoint loading and redo; `check`: full verify.
- `committer`: group commit under the log lock; `writer`: LogWriter; `store`: Store.

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
