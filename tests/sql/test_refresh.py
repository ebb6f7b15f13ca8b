"""The cache follows the store: incremental refresh, resumed runs, replayed values, run status."""

from __future__ import annotations

import os
import tempfile

import pytest
from florql_storage import kinds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from florql.errors import QueryError
from florql.sql.connection import connect
from tests.sql.storebuild import RunLog, ctx_of, open_store


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / ".florql")


def test_a_query_after_more_logging_decodes_only_the_new_records(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    for step in range(1000):
        log.log(ctx_of(epoch=1, step=step), {"loss": float(step)}, atomic=False)
    w.flush()
    con = connect(store_path, replay=False)
    assert con.sql("SELECT count(*) FROM records").fetchall() == [(1000,)]
    first = con.cache.decoded_records
    assert first >= 1000
    for step in range(1000, 1010):  # 1% more
        log.log(ctx_of(epoch=1, step=step), {"loss": float(step)}, atomic=False)
    w.flush()
    assert con.sql("SELECT count(*), max(step) FROM logs").fetchall() == [(1010, 1009)]
    new = con.cache.decoded_records - first
    assert 10 <= new <= 30  # the 10 values and their LOOP records, nothing older
    assert con.sql("SELECT count(*) FROM logs").fetchall() == [(1010,)]
    assert con.cache.decoded_records - first == new  # nothing appended: nothing decoded
    log.end()
    w.close()
    con.close()
    store.close()


def test_a_resumed_run_hides_the_values_it_superseded(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    for epoch in range(1, 4):
        log.log(ctx_of(epoch=epoch), {"acc": epoch * 1.0})
    resume_seq = 2  # the checkpoint was taken after epoch 1 (LOOP seq 1, VALUE seq 2)
    w.close()  # the run "crashes": no RUN_END
    w = store.writer()
    w.resume_run("r1", {"seq": resume_seq, "ckpt_id": "ck", "resumed_at": 0.0})
    log.w, log.seq = w, resume_seq
    for epoch in range(2, 4):
        log.log(ctx_of(epoch=epoch), {"acc": epoch * 10.0})
    log.end()
    w.close()
    con = connect(store_path, replay=False)
    rows = con.sql("SELECT epoch, acc FROM logs ORDER BY epoch").fetchall()
    assert rows == [(1, 1.0), (2, 20.0), (3, 30.0)]
    assert con.sql("SELECT count(*) FROM records").fetchall() == [(3,)]
    assert con.sql('SELECT status, "values" FROM runs').fetchall() == [("finished", 3)]
    con.close()
    store.close()


def test_replayed_values_are_ordinary_data_marked_by_source_and_divergence(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    for epoch in range(1, 4):
        log.log(ctx_of(epoch=epoch), {"acc": float(epoch)})
    log.end()
    for replay_id, mismatch in (("rp1", None), ("rp2", {"name": "acc"})):
        epochs = (1, 2) if replay_id == "rp1" else (3,)
        w.append(kinds.REPLAY_BEGIN, {"replay_id": replay_id, "run_id": "r1", "names": ["gn"]})
        for epoch in epochs:
            log.log(ctx_of(epoch=epoch), {"gn": epoch * 0.5}, replay_id=replay_id)
        fidelity = {"checked": 1, "matched": 0 if mismatch else 1, "first_mismatch": mismatch}
        w.append(kinds.REPLAY_END, {"replay_id": replay_id, "run_id": "r1", "status": "ok",
                                    "fidelity": fidelity})  # fmt: skip
    w.close()
    con = connect(store_path, replay=False)
    assert con.sql("SELECT epoch, acc, gn FROM logs ORDER BY epoch").fetchall() == [
        (1, 1.0, 0.5),
        (2, 2.0, 1.0),
        (3, 3.0, 1.5),
    ]
    rows = con.sql(
        "SELECT epoch, source, replay_id, diverged FROM records WHERE name = 'gn' ORDER BY epoch"
    ).fetchall()
    assert rows == [(1, "replay", "rp1", False), (2, "replay", "rp1", False),
                    (3, "replay", "rp2", True)]  # fmt: skip
    con.close()
    store.close()


def test_run_status_and_checkpoints_follow_the_store(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1", args={"lr": 0.5, "opt": "adam", "flag": True, "layers": [1, 2]})
    log.log(ctx_of(epoch=1, step=0), {"loss": 1.0})
    w.flush()
    con = connect(store_path, replay=False)
    assert con.sql("SELECT status FROM runs").fetchall() == [("running",)]
    meta = {"run_id": "r1", "seq": 2, "ctx": ctx_of(epoch=1), "phase": "inner_end"}
    w.write_checkpoint("r1", meta, [b"x" * 4096])
    log.end()
    rows = con.sql(
        "SELECT run_id, epoch, phase, raw_bytes, stored_bytes > 0 FROM checkpoints"
    ).fetchall()
    assert rows == [("r1", 1, "inner_end", 4096, True)]
    assert con.sql("SELECT status, checkpoints FROM runs").fetchall() == [("finished", 1)]
    rows = con.sql("SELECT DISTINCT lr, opt, flag, layers FROM logs").fetchall()
    assert rows == [(0.5, "adam", True, "[1, 2]")]
    w.close()
    con.close()
    store.close()


def test_a_run_whose_writer_vanished_reads_as_crashed(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    log.log(ctx_of(epoch=1), {"acc": 1.0})
    w.close()  # releases the liveness lock without RUN_END
    con = connect(store_path, replay=False)
    assert con.sql("SELECT status FROM runs").fetchall() == [("crashed",)]
    con.close()
    store.close()


def test_names_colliding_with_loops_and_args_get_prefixed_columns(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1", args={"lr": 0.1, "epoch": 99})
    log.log(ctx_of(epoch=1), {"lr": 0.05, "epoch": 7.0, "value": 3.0})
    log.end()
    w.close()
    con = connect(store_path, replay=False)
    rel = con.sql("SELECT * FROM logs")
    assert rel.columns == [
        "run_id", "epoch", "log_epoch", "log_lr", "value", "arg_epoch", "arg_lr"
    ]  # fmt: skip
    assert rel.fetchall() == [("r1", 1, 7.0, 0.05, 3.0, 99, 0.1)]
    assert con.sql("SELECT log_lr, arg_lr FROM logs").fetchall() == [(0.05, 0.1)]
    # `lr` is both logged and an arg: naming it bare is an error naming both, never a guess
    with pytest.raises(QueryError, match="ambiguous: .* write log_lr .* or arg_lr for the arg"):
        con.sql("SELECT epoch FROM logs WHERE lr > 0")
    con.close()
    store.close()


def test_renamed_columns_never_take_a_name_the_user_logged(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    log.log(ctx_of(epoch=1), {"epoch": 7.0, "log_epoch": 8.0, "log_epoch_2": 9.0})
    log.end()
    w.close()
    con = connect(store_path, replay=False)
    rel = con.sql("SELECT * FROM logs")
    assert rel.columns == ["run_id", "epoch", "log_epoch_3", "log_epoch", "log_epoch_2"]
    assert rel.fetchall() == [("r1", 1, 7.0, 8.0, 9.0)]
    assert con.sql("SELECT log_epoch FROM logs").fetchall() == [(8.0,)]
    con.close()
    store.close()


def test_a_loop_with_string_values_becomes_a_text_column(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    log.log(ctx_of(phase=0), {"x": 1.0})
    log.log([["phase", 1, "eval"]], {"x": 2.0})
    log.end()
    w.close()
    con = connect(store_path, replay=False)
    assert con.sql("SELECT phase, x FROM logs ORDER BY x").fetchall() == [("0", 1.0), ("eval", 2.0)]
    con.close()
    store.close()


def test_names_differing_only_in_case_get_distinct_columns(store_path: str) -> None:
    store = open_store(store_path)
    w = store.writer()
    log = RunLog(w, "r1")
    log.log(ctx_of(epoch=1), {"Loss": 1.0, "loss": 2.0})
    log.end()
    w.close()
    con = connect(store_path, replay=False)
    rel = con.sql("SELECT * FROM logs")
    assert rel.columns == ["run_id", "epoch", "Loss", "loss_2"]
    assert rel.fetchall() == [("r1", 1, 1.0, 2.0)]
    assert con.sql("SELECT loss_2 FROM logs").fetchall() == [(2.0,)]
    con.close()
    store.close()


_writes = st.lists(
    st.tuples(
        st.integers(0, 3),  # epoch
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.floats(-10, 10, allow_nan=False), st.text("xy", max_size=2)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_writes, min_size=1, max_size=4))
def test_the_wide_form_equals_a_pivot_of_everything_ingested_in_pieces(chunks) -> None:
    """Cache invariant 3, across refreshes that update older contexts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, ".florql")
        store = open_store(path)
        w = store.writer()
        log = RunLog(w, "r1")
        con = connect(path, replay=False)
        last: dict[tuple, dict] = {}
        text: set[str] = set()  # a name with any text value is a VARCHAR column
        for chunk in chunks:
            for epoch, name, value in chunk:
                if isinstance(value, str):
                    text.add(name)
                log.log(ctx_of(epoch=epoch), {name: value})
                row = last.setdefault((epoch,), {})
                if value is not None or name not in row:
                    row[name] = value if value is not None else row.get(name)
            w.flush()
            con.refresh()
        names = sorted(con.catalog().names)
        got = con.sql(f"SELECT epoch, {', '.join(names)} FROM logs").fetchall()
        want = []
        for (epoch,), row in last.items():
            cells = []
            for n in names:
                v = row.get(n)
                if v is not None and n in text and not isinstance(v, str):
                    v = str(float(v))
                cells.append(v)
            want.append((epoch, *cells))
        assert sorted(got, key=repr) == sorted(want, key=repr)
        con.close()
        log.end()
        w.close()
        store.close()
