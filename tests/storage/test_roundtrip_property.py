"""Hypothesis: any sequence of appends, atomic groups, flushes, checkpoints and reopens reads back
exactly as a simple in-memory model says (write -> reopen -> read round trips)."""

from __future__ import annotations

from florql_storage import Store, kinds
from florql_storage.fs import MemFS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import SCALE

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
bodies = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from([3, 4, 5, 6, 7, 9, 10]), bodies),
        st.tuples(st.just("atomic"), st.lists(bodies, min_size=1, max_size=4)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("ckpt"), st.lists(st.binary(max_size=3000), max_size=3)),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_any_operation_sequence_reads_back_as_the_model_says(seq):
    fs = MemFS()
    options = {"segment_bytes": 4096, "page_bytes": 1024, "index_records": 7}
    store = Store.open("/s", fs=fs, **options)
    w = store.writer()
    model: list[tuple[int, object]] = []  # durable (kind, body) in order, CKPT records excluded
    pending: list[tuple[int, object]] = []
    ckpts: list[list[bytes]] = []
    for op in seq:
        if op[0] == "append":
            w.append(op[1], op[2])
            pending.append((op[1], op[2]))
        elif op[0] == "atomic":
            w.append_many([(kinds.VALUE, b) for b in op[1]], atomic=True)
            pending.extend((kinds.VALUE, b) for b in op[1])
        elif op[0] == "flush":
            w.flush()
            model, pending = model + pending, []
        elif op[0] == "ckpt":
            w.write_checkpoint("r", {"n": len(ckpts)}, op[1])
            ckpts.append(op[1])
            model, pending = model + pending, []
        else:
            w.flush()
            model, pending = model + pending, []
            w.close()
            store = Store.open("/s", fs=fs, **options)
            w = store.writer()
    w.flush()
    model += pending
    again = Store.open("/s", fs=fs)
    got = [
        (r.kind, r.body) for r in again.scan() if r.kind not in (kinds.CKPT_BEGIN, kinds.CKPT_END)
    ]
    assert got == model  # every generated type survives msgpack unchanged
    assert [r.lsn for r in again.scan()] == list(range(1, again.last_lsn + 1))
    loaded = [[bytes(b) for b in again.load_checkpoint(c)[1]] for c in again.checkpoints()]
    assert loaded == ckpts
    assert again.check() == []
