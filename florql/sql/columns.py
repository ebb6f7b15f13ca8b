"""Arrow columns from Python lists, built from buffers.

Why not `pa.array(list)`: pyarrow 26 imports pandas on its first conversion of a Python
sequence (to ask whether the object is pandas-like), which costs ~0.85 s on this machine, more
than the rest of `florql query` together. These builders go through NumPy and
`pa.Array.from_buffers`, which never ask. Strings become dictionary-encoded columns, which
DuckDB reads efficiently (the logged `name` has few distinct values).

>>> float_column([1.5, None, True]).to_pylist()
[1.5, None, 1.0]
>>> int_column([3, None, 5]).to_pylist()
[3, None, 5]
>>> string_column(["loss", None, "acc", "loss"]).to_pylist()
['loss', None, 'acc', 'loss']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


def _validity(values: Sequence[Any] | np.ndarray) -> tuple[Any, int]:
    """A validity bitmap buffer (None when nothing is NULL) and the null count."""
    if None not in values:
        return None, 0
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    bits = np.packbits(valid, bitorder="little")
    return pa.py_buffer(bits.tobytes()), int(len(values) - valid.sum())


def float_column(values: Sequence[Any]) -> pa.Array:
    """DOUBLE from numbers, bools and None (NULL); NaN stays NaN, distinct from NULL."""
    validity, nulls = _validity(values)
    data = (
        np.array(values, dtype=np.float64)
        if not nulls
        else np.array([0.0 if v is None else v for v in values], dtype=np.float64)
    )
    return pa.Array.from_buffers(pa.float64(), len(values), [validity, pa.py_buffer(data)], nulls)


def int_column(values: Sequence[Any] | np.ndarray) -> pa.Array:
    """BIGINT from ints and None (or from an int64 NumPy array, which has no None)."""
    validity, nulls = _validity(values)
    data = np.array(
        values if not nulls else [0 if v is None else v for v in values], dtype=np.int64
    )
    return pa.Array.from_buffers(pa.int64(), len(values), [validity, pa.py_buffer(data)], nulls)


def bool_column(values: Sequence[Any]) -> pa.Array:
    """BOOLEAN from bools and None.

    >>> bool_column([True, None, False]).to_pylist()
    [True, None, False]
    """
    validity, nulls = _validity(values)
    bits = np.packbits(np.array([bool(v) for v in values], dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, pa.py_buffer(bits)], nulls)


def _plain_strings(values: Sequence[str]) -> pa.Array:
    encoded = [v.encode("utf-8", "surrogatepass") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.large_string(), len(encoded), buffers, 0)


def string_column(values: Sequence[Any]) -> pa.Array:
    """VARCHAR (dictionary-encoded) from str and None."""
    if values and values[0] is None and values.count(None) == len(values):
        return pa.nulls(len(values), pa.string())
    if values and len(set(values)) == 1:  # one value repeated (a run id, an empty replay id)
        zeros = np.zeros(len(values), dtype=np.int32)
        indices = pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(zeros)], 0)
        return pa.DictionaryArray.from_arrays(indices, _plain_strings([values[0]]))
    codes: dict[str, int] = {}
    setdefault = codes.setdefault
    indices = [None if v is None else setdefault(v, len(codes)) for v in values]
    dictionary = _plain_strings(list(codes))
    return pa.DictionaryArray.from_arrays(_int32_column(indices), dictionary)


def _int32_column(values: list) -> pa.Array:
    # Built directly: Array.cast would import pyarrow.compute (~0.1 s at startup).
    validity, nulls = _validity(values)
    data = np.array(
        values if not nulls else [0 if v is None else v for v in values], dtype=np.int32
    )
    return pa.Array.from_buffers(pa.int32(), len(values), [validity, pa.py_buffer(data)], nulls)


def table(columns: dict[str, pa.Array]) -> pa.Table:
    """A table from named Arrow arrays (no conversion, hence no pandas)."""
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))
