"""florql's exception tree, re-exported from the storage layer where it is defined.

>>> from florql.errors import FlorqlError, QueryError
>>> issubclass(QueryError, FlorqlError)
True
"""

from florql_storage.errors import (
    BadInputError,
    CorruptionError,
    EditError,
    FlorqlError,
    QueryError,
    RecordError,
    ReplayError,
    StoreError,
)

__all__ = [
    "BadInputError",
    "CorruptionError",
    "EditError",
    "FlorqlError",
    "QueryError",
    "RecordError",
    "ReplayError",
    "StoreError",
]
