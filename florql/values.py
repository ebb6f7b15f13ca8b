"""Which names and values `florql.log` (and `loop`, `arg`) accept, and their stored form.

The one rule: **a call accepts exactly what the store can hold and SQL can read back**, and
refuses everything else *at the call*, naming the argument, so nothing bad ever reaches the
background flusher (which could then only drop it). A logged value is stored as msgpack data:

- numbers: bools, floats (NaN and infinities too), ints within msgpack's range
  (-2**63 .. 2**64-1); NumPy scalars and 0-d tensors become these;
- strings that are valid Unicode (no lone surrogates, which UTF-8 cannot encode);
- None;
- small lists, tuples and dicts of those (dict keys: str or int), at most `MAX_ELEMENTS`
  elements and `MAX_DEPTH` levels; small NumPy arrays and tensors (bool, int, float) become
  nested lists.

Complex numbers, bytes, dates, objects, sparse or quantized tensors are a `TypeError`; an int
beyond 64 bits or a lone surrogate is a `BadValueError` (a `ValueError`). Names (of values,
loops and args) are non-empty strings of valid Unicode without NUL characters, at most
`MAX_NAME` characters; a name of another type is a `TypeError`.

>>> to_loggable("loss", 0.5)
0.5
>>> to_loggable("hist", (1, 2.5, None))
[1, 2.5, None]
>>> to_loggable("cfg", {"lr": 0.1, "tags": ["a"]})
{'lr': 0.1, 'tags': ['a']}
>>> to_loggable("model", object())
Traceback (most recent call last):
...
TypeError: florql.log('model', ...): cannot log a value of type object; log numbers, bools, strings, None, 0-d tensors or small lists/dicts/arrays of those (e.g. loss.item())
>>> to_loggable("big", 10**30)
Traceback (most recent call last):
...
florql.errors.BadValueError: florql.log('big', ...): the int 1000000000000000000000000000000 is beyond the 64-bit range florql stores (-2**63 .. 2**64-1); log it as float(x) or str(x)
>>> check_name("florql.log", "")
Traceback (most recent call last):
...
florql.errors.BadValueError: florql.log(''): a name must not be empty; give the variable a name such as "loss"
"""

from __future__ import annotations

from typing import Any

from florql.errors import BadValueError

# Plain scalars: the types the hot path of florql.log recognises by identity.
SCALARS = frozenset({int, float, str, bool, type(None)})

# Arrays, tensors, lists and dicts larger than this are refused: florql logs values, not data.
MAX_ELEMENTS = 4096
# Deeper nesting than this is refused (msgpack and JSON text both handle far more; a logged
# value this deep is a mistake, and a bound keeps the recursion here safe).
MAX_DEPTH = 32
# Names become SQL column names; DuckDB and readers of a table cope with this length.
MAX_NAME = 255

INT_MIN, INT_MAX = -(2**63), 2**64 - 1

_KINDS = "log numbers, bools, strings, None, 0-d tensors or small lists/dicts/arrays of those"


def check_name(call: str, name: Any) -> None:
    """Raise unless `name` can name a value, loop or arg (`call` says which API was called).

    Raises:
        TypeError: `name` is not a str (e.g. name and value swapped).
        BadValueError: empty, too long, holding NUL or a lone surrogate.

    >>> check_name("florql.log", 5)
    Traceback (most recent call last):
    ...
    TypeError: florql.log(5, ...): the name must be a str, not int; write florql.log("name", value)
    """
    if not isinstance(name, str):
        raise TypeError(
            f"{call}({name!r:.60}, ...): the name must be a str, not {type(name).__name__}; "
            f'write {call}("name", value)'
        )
    if not name.strip():
        what = "empty" if not name else "blank"
        raise BadValueError(
            f'{call}({name!r}): a name must not be {what}; give the variable a name such as "loss"'
        )
    if len(name) > MAX_NAME:
        raise BadValueError(
            f"{call}({name[:40]!r}...): a name is at most {MAX_NAME} characters, not {len(name)}"
        )
    if "\0" in name:
        raise BadValueError(f"{call}({name!r}): a name must not hold a NUL character")
    if not is_utf8(name):
        raise BadValueError(
            f"{call}({name!r}): the name holds a lone surrogate, which UTF-8 cannot store; "
            "use valid Unicode text"
        )


def is_name(name: Any) -> bool:
    """Whether `check_name` accepts `name` (the SQL layer skips stored names it refuses:
    stores written before names were checked may hold some).

    >>> is_name("loss"), is_name(""), is_name(3)
    (True, False, False)
    """
    try:
        check_name("", name)
    except (TypeError, ValueError):
        return False
    return True


def to_loggable(name: str, value: Any, call: str = "florql.log") -> Any:
    """Return `value` in its stored form, or raise naming `call` and `name` (module docstring).

    >>> import numpy as np
    >>> to_loggable("acc", np.float32(0.25)), to_loggable("v", np.arange(3))
    (0.25, [0, 1, 2])
    """
    t = type(value)
    if t is float or t is bool or value is None:
        return value
    if t is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise _int_error(f"{call}({name!r}, ...)", value)
    if t is str:
        if value.isascii() or is_utf8(value):
            return value
        raise _text_error(f"{call}({name!r}, ...)")
    converted = _convert(value, [0], 0)
    if isinstance(converted, _Refused):
        if converted.error is not None:
            raise converted.error(f"{call}({name!r}, ...)")
        raise TypeError(
            f"{call}({name!r}, ...): cannot log a value of type {t.__name__}; {_KINDS} "
            "(e.g. loss.item())"
        )
    return converted


def is_loggable(value: Any) -> bool:
    """True when `to_loggable` would accept `value` (used for script variables).

    >>> is_loggable(3), is_loggable([1, "a"]), is_loggable(object()), is_loggable(2**70)
    (True, True, False, False)
    """
    try:
        to_loggable("", value)
    except (TypeError, ValueError):
        return False
    return True


def is_utf8(text: str) -> bool:
    """Whether UTF-8 can encode `text` (strings from the OS may hold lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_error(where: str, value: int) -> BadValueError:
    # A huge int has no short decimal form (and str() refuses past 4300 digits).
    shown = str(value) if value.bit_length() <= 128 else f"of {value.bit_length()} bits"
    return BadValueError(
        f"{where}: the int {shown} is beyond the 64-bit range florql stores "
        "(-2**63 .. 2**64-1); log it as float(x) or str(x)"
    )


def _text_error(where: str) -> BadValueError:
    return BadValueError(
        f"{where}: the string holds a lone surrogate, which UTF-8 cannot "
        "store; log valid Unicode text (e.g. s.encode('utf-8', 'replace').decode())"
    )


class _Refused:
    """Why a value was refused: `error(name)` builds a specific error, or None (wrong type)."""

    __slots__ = ("error",)

    def __init__(self, error: Any = None) -> None:
        self.error = error


_REFUSED = _Refused()


def _convert(value: Any, budget: list[int], depth: int) -> Any:
    """Convert recursively; `budget[0]` counts elements so huge structures are refused."""
    budget[0] += 1
    if budget[0] > MAX_ELEMENTS or depth > MAX_DEPTH:
        return _REFUSED
    t = type(value)
    if t is float or t is bool or value is None:
        return value
    if t is int:
        return value if INT_MIN <= value <= INT_MAX else _Refused(lambda n: _int_error(n, value))
    if t is str:
        return value if is_utf8(value) else _Refused(_text_error)
    if t in (list, tuple):
        out = []
        for v in value:
            c = _convert(v, budget, depth + 1)
            if isinstance(c, _Refused):
                return c
            out.append(c)
        return out
    if t is dict:
        d = {}
        for k, v in value.items():
            key = _convert(k, budget, depth + 1) if type(k) in (str, int) else _REFUSED
            if isinstance(key, _Refused):
                return key
            c = _convert(v, budget, depth + 1)
            if isinstance(c, _Refused):
                return c
            d[key] = c
        return d
    return _convert_array_like(value, budget, depth)


def _convert_array_like(value: Any, budget: list[int], depth: int) -> Any:
    """NumPy scalars/arrays and torch tensors, recognised without importing either library."""
    module = type(value).__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        return _convert_numpy(value, budget, depth)
    if module.startswith("torch"):
        return _convert_tensor(value, budget, depth)
    return _REFUSED


def _convert_numpy(value: Any, budget: list[int], depth: int) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        kind = value.dtype.kind
        if kind in "biu?":
            return _convert(value.item(), budget, depth)
        if kind == "f":  # float(): a longdouble's item() would stay a NumPy object
            return float(value)
        if kind == "U":
            return _convert(str(value), budget, depth)
        return _REFUSED  # complex, bytes, datetimes, objects, records
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf?":
        budget[0] += value.size
        if budget[0] > MAX_ELEMENTS or depth + value.ndim > MAX_DEPTH:
            return _REFUSED
        if value.dtype.kind == "f" and value.dtype.itemsize > 8:
            value = value.astype(np.float64)
        return value.tolist()
    return _REFUSED


def _convert_tensor(value: Any, budget: list[int], depth: int) -> Any:
    import torch

    if not isinstance(value, torch.Tensor) or value.is_sparse or value.is_complex():
        return _REFUSED
    if value.is_quantized or value.is_meta:
        return _REFUSED
    budget[0] += value.numel()
    if budget[0] > MAX_ELEMENTS or depth + value.dim() > MAX_DEPTH:
        return _REFUSED
    v = value.detach()
    try:
        out = v.item() if v.dim() == 0 else v.cpu().tolist()
    except (RuntimeError, NotImplementedError, TypeError):
        return _REFUSED  # a tensor subclass or device that cannot give its values
    return out
