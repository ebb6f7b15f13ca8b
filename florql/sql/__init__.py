"""The SQL layer: `florql query`, `florql explain`, `florql.connect().sql()` over DuckDB.

Pipeline, one module per step: `statement` (parse) -> `safety` (refuse writes and file access)
-> `analysis` (variables, missing names, selection; `catalog`, `florql.replay.selection`) -> `missing`
(hindsight replay or a did-you-mean error) -> `cache` (the store's records in DuckDB, refreshed
incrementally via Arrow) -> `views` (logs, records, runs, checkpoints) -> `connection`
(the DuckDB-shaped API) -> `format` (table, csv, json) and `commands` (CLI handlers).

`florql.sql(query)` is a function of the florql package, but importing this subpackage rebinds
the attribute `florql.sql` to the subpackage. So that `florql.sql("SELECT ...")` keeps working
either way, this module is callable and does exactly what the function does.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, query: str) -> Any:
        """Run `query` on the default connection (same as the function `florql.sql`)."""
        from florql.sql.connection import default_connection

        return default_connection().sql(query)


sys.modules[__name__].__class__ = _CallableModule
