"""One refresh's worth of VALUE records as column lists, then as one Arrow table.

The decode loop (`Cache._ingest`) is the hot path of a cold query: it takes whole frames from
`Store.scan_bodies` and runs no Python code per value, only C-level passes (`list.extend`,
`itertools.compress`, `map`); context ids are resolved in bulk (`Cache._resolve_contexts`).
Classification of values (number, text, None) happens once per batch
on whole lists: the common all-numeric case is one NumPy conversion.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from florql import schema
from florql.sql import columns
from florql.values import is_name

_NUMERIC = {float, int, bool, type(None)}


class Batch:
    """One bulk insert into `_values`: the VALUE bodies as decoded, plus LSN and context id.

    Bodies are kept whole (whole frames at a time) and their fields pulled out with
    `map(itemgetter(i), bodies)` at flush time, which is far cheaper than appending each field
    to its own list in the loop.
    """

    def __init__(self) -> None:
        self.bodies: list = []  # [run_id, seq, name, value, ctx, t, replay_id]
        self.lsn = array("q")  # C longs, not a million int objects
        self.ctx_id: list = []
        self.new_contexts: list = []  # (ctx_id, run_id, {loop slot: value}, key or None)

    def clear(self) -> None:
        """Empty the columns in place (the decode loop holds their bound `append`s)."""
        self.bodies.clear()
        del self.lsn[:]
        self.ctx_id.clear()
        self.new_contexts = []

    def __len__(self) -> int:
        return len(self.lsn)

    def drop_invalid(self, bad_contexts: set[int]) -> list[Any]:
        """Remove values whose name cannot be a column, or whose context is in `bad_contexts`
        (cache invariant 4); return the offending names (a loop's for a bad context).

        When every name is a str (always, for stores florql checked at the call) the check
        is per distinct name, not per value.
        """
        names = list(map(itemgetter(schema.NAME), self.bodies))
        if not names:
            return []
        bad = {n for n in set(names) if not is_name(n)} if set(map(type, names)) == {str} else None
        bad_ctx = bad_contexts.intersection(self.ctx_id) if bad_contexts else set()
        if bad == set() and not bad_ctx:
            return []
        keep: list[bool] = []
        dropped: dict[str, Any] = {}
        for body, name, ctx_id in zip(self.bodies, names, self.ctx_id, strict=True):
            good_name = name not in bad if bad is not None else is_name(name)
            keep.append(good_name and ctx_id not in bad_ctx)
            if not good_name:
                dropped.setdefault(repr(name), name)
            elif ctx_id in bad_ctx:
                loop = next((lv[0] for lv in body[schema.CTX] if not is_name(lv[0])), name)
                dropped.setdefault(repr(loop), loop)
        # In place: the decode loop holds these lists' bound methods.
        self.bodies[:] = compress(self.bodies, keep)
        self.lsn[:] = array("q", compress(self.lsn, keep))
        self.ctx_id[:] = compress(self.ctx_id, keep)
        return list(dropped.values())

    @staticmethod
    def value_columns(values: Sequence[Any]) -> tuple[pa.Array, pa.Array]:
        """(value DOUBLE, value_text VARCHAR): numbers and bools vs str, lists and dicts."""
        if set(map(type, values)) <= _NUMERIC:
            return columns.float_column(values), pa.nulls(len(values), pa.string())
        nums: list = []
        texts: list = []
        for v in values:
            tv = type(v)
            if tv in _NUMERIC:
                nums.append(v)
                texts.append(None)
            else:
                nums.append(None)
                texts.append(v if tv is str else json.dumps(v))
        return columns.float_column(nums), columns.string_column(texts)

    def to_arrow(self) -> pa.Table:
        bodies = self.bodies  # extra trailing fields are ignored
        seq, name, value, t, replay_id = (
            list(map(itemgetter(i), bodies))
            for i in (schema.SEQ, schema.NAME, schema.VAL, schema.TIME, schema.REPLAY_ID)
        )
        value_col, text_col = self.value_columns(value)
        return columns.table(
            {
                "lsn": columns.int_column(np.frombuffer(self.lsn, dtype=np.int64)),
                "seq": columns.int_column(seq),
                "ctx_id": columns.int_column(self.ctx_id),
                "name": columns.string_column(name),
                "value": value_col,
                "value_text": text_col,
                "t": columns.float_column(t),
                "replay_id": columns.string_column([r or "" for r in replay_id]),
            }
        )
