"""florql's exception tree, re-exported from the storage layer where it is defined.

>>> from florql.errors import BadValueError, FlorqlError, QueryError
>>> issubclass(QueryError, FlorqlError), issubclass(BadValueError, ValueError)
(True, True)
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


class BadValueError(BadInputError, ValueError):
    """A name or value given to `florql.log`/`loop`/`arg` that florql cannot store (an int
    beyond 64 bits, a lone surrogate, an empty name). Also a ValueError, as Python code
    expects of a bad argument value."""


__all__ = [
    "BadInputError",
    "BadValueError",
    "CorruptionError",
    "EditError",
    "FlorqlError",
    "QueryError",
    "RecordError",
    "ReplayError",
    "StoreError",
]
