"""One refresh's worth of VALUE records as column lists, then as one Arrow table.

The decode loop (`Cache._ingest`) is the hot path of a cold query: per value it does a handful
of `list.append`s through bound methods, nothing else (FIELD-NOTES: an append is ~0.02 us, a
msgpack decode ~0.5 us). Classification of values (number, text, None) happens once per batch
on whole lists: the common all-numeric case is one NumPy conversion.
"""

from __future__ import annotations

import json

import pyarrow as pa

from florql.sql import columns

_NUMERIC = {float, int, bool, type(None)}


class Batch:
    """Column lists for one bulk insert into `_values` (its run id comes from its context)."""

    def __init__(self) -> None:
        self.lsn: list = []
        self.seq: list = []
        self.ctx_id: list = []
        self.name: list = []
        self.value: list = []
        self.t: list = []
        self.replay_id: list = []
        self.new_contexts: list = []  # (ctx_id, run_id, {loop slot: value})

    def clear(self) -> None:
        """Empty the columns in place (the decode loop holds their bound `append`s)."""
        for column in (self.lsn, self.seq, self.ctx_id, self.name, self.value,
                       self.t, self.replay_id):  # fmt: skip
            column.clear()
        self.new_contexts = []

    def __len__(self) -> int:
        return len(self.lsn)

    def value_columns(self) -> tuple[pa.Array, pa.Array]:
        """(value DOUBLE, value_text VARCHAR): numbers and bools vs str, lists and dicts."""
        values = self.value
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
        value, text = self.value_columns()
        return columns.table(
            {
                "lsn": columns.int_column(self.lsn),
                "seq": columns.int_column(self.seq),
                "ctx_id": columns.int_column(self.ctx_id),
                "name": columns.string_column(self.name),
                "value": value,
                "value_text": text,
                "t": columns.float_column(self.t),
                "replay_id": columns.string_column([r or "" for r in self.replay_id]),
            }
        )
