"""What `florql.log` accepts is exactly what the store holds and SQL reads back (values.py).

Two properties: (1) every accepted kind, logged through a real session, goes through the
background flusher to disk and comes back from SQL as the oracle says; (2) for any value at all,
`to_loggable` either refuses it at the call (TypeError/ValueError) or returns data that msgpack
stores and reads back unchanged.
"""

from __future__ import annotations

import json
import math
import tempfile

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from florql import session
from florql.sql.connection import Connection
from florql.values import INT_MAX, INT_MIN, MAX_DEPTH, to_loggable
from tests.recording.recutil import SCALE

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT_MIN, INT_MAX),
    st.floats(),  # NaN and infinities too
    texts,
)
numpy_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.integers(-128, 127).map(np.int8),
    st.floats(width=32).map(np.float32),
    st.floats(width=16).map(np.float16),
    st.floats().map(np.float64),
    st.booleans().map(np.bool_),
    texts.map(np.str_),
)
tensors = st.one_of(
    st.floats(width=32).map(lambda x: torch.tensor(x, dtype=torch.float32)),
    st.integers(-(2**63), 2**63 - 1).map(lambda x: torch.tensor(x, dtype=torch.int64)),
    st.booleans().map(torch.tensor),
    st.lists(st.floats(width=32), max_size=5).map(lambda v: torch.tensor(v, dtype=torch.float32)),
    st.lists(st.integers(-100, 100), max_size=5).map(lambda v: np.array(v, dtype=np.int32)),
)
accepted = st.recursive(
    st.one_of(plain, numpy_scalars, tensors),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(texts, st.integers(INT_MIN, INT_MAX)), inner, max_size=4),
    ),
    max_leaves=10,
)


def expected_sql(stored):
    """(value, value_text) as the `records` view shows a stored value."""
    if stored is None:
        return None, None
    if isinstance(stored, (bool, int, float)):
        return float(stored), None
    if isinstance(stored, str):
        return None, stored
    return None, json.dumps(stored)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@settings(
    max_examples=12 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(accepted, min_size=1, max_size=25))
def test_every_accepted_kind_goes_through_the_flusher_and_reads_back_by_sql(tmp_path, values):
    store = tempfile.mkdtemp(dir=tmp_path)  # one store per example
    script = tmp_path / "train.py"
    script.write_text("\n")
    s = session.Session(str(store), script=str(script), argv=["train.py"])
    s.start()
    try:
        for i, v in enumerate(values):
            assert s.log(f"v{i}", v) is v
        s.flusher.cycle()  # the background thread's own pass
    finally:
        stats = s.end()
    assert stats["values"] == len(values) and not stats["degraded"]
    con = Connection(str(store), replay=False)
    try:
        rows = con.sql("SELECT name, value, value_text FROM records ORDER BY lsn").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == [f"v{i}" for i in range(len(values))]
    for v, (_, value, text) in zip(values, rows, strict=True):
        want_value, want_text = expected_sql(to_loggable("v", v))
        assert same(value, want_value) and text == want_text, (v, value, text)


anything = st.recursive(
    st.one_of(
        plain,
        st.integers(),  # beyond 64 bits too
        st.text(max_size=6),  # lone surrogates too
        st.binary(max_size=4),
        st.complex_numbers(),
        st.just(object()),
        numpy_scalars,
        st.complex_numbers(width=64).map(np.complex64),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.booleans()), inner),
    ),
    max_leaves=12,
)


@settings(max_examples=300 * SCALE, deadline=None)
@given(value=anything)
def test_whatever_the_call_accepts_msgpack_stores_and_reads_back_unchanged(value):
    try:
        stored = to_loggable("x", value)
    except (TypeError, ValueError):
        return
    back = msgpack.unpackb(
        msgpack.packb(stored, use_bin_type=True), raw=False, strict_map_key=False
    )
    assert repr(back) == repr(stored)


@pytest.mark.parametrize(
    "value",
    [
        np.complex64(1 + 2j),
        np.complex128(1j),
        torch.tensor(1 + 2j),
        10**30,
        -(2**63) - 1,
        2**64,
        "a\ud800b",
        {"k": "\udcff"},
        {"\ud800": 1},
        {2**70: 1},
        [[1, 2**64]],
        np.datetime64("2020-01-01"),
        np.bytes_(b"x"),
        np.array(["a"]),
        np.array([1 + 1j]),
        torch.zeros(2, device="meta"),
        torch.tensor([1.0]).to_sparse(),
    ],
)
def test_values_the_store_cannot_hold_are_refused_at_the_call(value):
    with pytest.raises((TypeError, ValueError), match=r"^florql\.log\('z', \.\.\.\): "):
        to_loggable("z", value)


def test_nesting_deeper_than_the_limit_is_refused():
    deep: list = [1]
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(TypeError, match="cannot log a value of type list"):
        to_loggable("z", deep)
