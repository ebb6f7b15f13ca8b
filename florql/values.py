"""Which Python values `florql.log` accepts, and their stored form.

A logged value is stored as msgpack data, so it must be a number, bool, string or None, or a small
list/dict of those. NumPy scalars and 0-d tensors become Python scalars; small arrays and
tensors become (nested) lists. Anything else is refused *at the log call* with a `TypeError`
that names the variable, so a bad value never reaches the background flusher.

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
"""

from __future__ import annotations

from typing import Any

# Plain scalars pass through untouched: this set is the hot path of florql.log.
SCALARS = frozenset({int, float, str, bool, type(None)})

# Arrays, tensors, lists and dicts larger than this are refused: florql logs values, not data.
MAX_ELEMENTS = 4096


def to_loggable(name: str, value: Any) -> Any:
    """Return `value` in its stored form, or raise TypeError naming `name`.

    >>> import numpy as np
    >>> to_loggable("acc", np.float32(0.25)), to_loggable("v", np.arange(3))
    (0.25, [0, 1, 2])
    """
    if type(value) in SCALARS:
        return value
    converted = _convert(value, [0])
    if converted is _REFUSED:
        raise TypeError(
            f"florql.log({name!r}, ...): cannot log a value of type {type(value).__name__}; "
            "log numbers, bools, strings, None, 0-d tensors or small lists/dicts/arrays of "
            "those (e.g. loss.item())"
        )
    return converted


def is_loggable(value: Any) -> bool:
    """True when `to_loggable` would accept `value` (used for script variables).

    >>> is_loggable(3), is_loggable([1, "a"]), is_loggable(object())
    (True, True, False)
    """
    return type(value) in SCALARS or _convert(value, [0]) is not _REFUSED


class _Refused:
    pass


_REFUSED = _Refused()


def _convert(value: Any, budget: list[int]) -> Any:
    """Convert recursively; `budget[0]` counts elements so huge structures are refused."""
    budget[0] += 1
    if budget[0] > MAX_ELEMENTS:
        return _REFUSED
    t = type(value)
    if t in SCALARS:
        return value
    if t in (list, tuple):
        out = []
        for v in value:
            c = _convert(v, budget)
            if c is _REFUSED:
                return _REFUSED
            out.append(c)
        return out
    if t is dict:
        d = {}
        for k, v in value.items():
            if type(k) not in (str, int):
                return _REFUSED
            c = _convert(v, budget)
            if c is _REFUSED:
                return _REFUSED
            d[k] = c
        return d
    return _convert_array_like(value, budget)


def _convert_array_like(value: Any, budget: list[int]) -> Any:
    """NumPy scalars/arrays and torch tensors, recognised without importing either library."""
    module = type(value).__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        import numpy as np

        if isinstance(value, np.generic):
            return value.item() if value.dtype.kind in "biufcU?" else _REFUSED
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf?":
            budget[0] += value.size
            return value.tolist() if budget[0] <= MAX_ELEMENTS else _REFUSED
        return _REFUSED
    if module.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor) and not value.is_sparse and not value.is_complex():
            budget[0] += value.numel()
            if budget[0] > MAX_ELEMENTS:
                return _REFUSED
            v = value.detach()
            return v.item() if v.dim() == 0 else v.cpu().tolist()
    return _REFUSED
