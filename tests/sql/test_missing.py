"""Variables no run logged: did-you-mean errors, or a hindsight replay through `ensure`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import florql.replay.hindsight as hindsight
from florql.errors import QueryError
from florql.sql.connection import connect
from tests.sql.storebuild import RunLog, ctx_of, open_store


@pytest.fixture
def store_path(tmp_path) -> str:
    path = str(tmp_path / ".florql")
    store = open_store(path)
    w = store.writer()
    for run_id in ("r1", "r2"):
        log = RunLog(w, run_id)
        for epoch in range(1, 5):
            log.log(ctx_of(epoch=epoch), {"grad_norm": epoch * 1.0, "loss": 1.0 / epoch})
        log.end()
    w.close()
    store.close()
    return path


def test_no_replay_names_the_variable_the_runs_and_the_closest_name(store_path: str) -> None:
    con = connect(store_path, replay=False)
    with pytest.raises(QueryError) as info:
        con.sql("SELECT grad_nrm FROM logs")
    message = str(info.value)
    assert "`grad_nrm`" in message
    assert "r1, r2" in message
    assert "did you mean `grad_norm`?" in message
    assert "--no-replay" in message
    con.close()


def test_a_name_asked_of_records_is_a_variable_too(store_path: str) -> None:
    con = connect(store_path, replay=False)
    with pytest.raises(QueryError, match="did you mean `loss`"):
        con.sql("SELECT value FROM records WHERE name = 'losss'")
    con.close()


def test_unresolved_names_from_ensure_are_a_query_error(store_path: str, monkeypatch) -> None:
    calls = []

    def fake_ensure(path, names, selection, workers=None, progress=True, **kw):
        calls.append((path, names, selection, workers, kw["tolerance"]))
        return SimpleNamespace(unresolved=set(names), replayed=0)

    monkeypatch.setattr(hindsight, "ensure", fake_ensure)
    con = connect(store_path, workers=3, tolerance=1e-6)
    with pytest.raises(QueryError, match="no current script logs it"):
        con.sql("SELECT epoch, weight_norm FROM logs WHERE epoch > 2")
    [(path, names, selection, workers, tolerance)] = calls
    assert (path, names, workers, tolerance) == (store_path, ["weight_norm"], 3, 1e-6)
    assert [selection.admits("r1", {"epoch": e}) for e in range(1, 5)] == [False, False, True, True]
    con.close()


def test_replayed_values_answer_the_query_and_unselected_rows_are_null(
    store_path: str, monkeypatch
) -> None:
    def fake_ensure(path, names, selection, workers=None, progress=True, **kw):
        # What the replay engine does: append the new values, one atomic frame per iteration.
        store = open_store(path)
        w = store.writer()
        for run_id in ("r1", "r2"):
            log = RunLog.__new__(RunLog)
            log.w, log.run_id, log.seq, log.t, log.last_ctx = w, run_id, 100, 0.0, None
            for epoch in range(1, 5):
                if selection.admits(run_id, {"epoch": epoch}):
                    log.log(ctx_of(epoch=epoch), {n: epoch * 7.0 for n in names}, replay_id="rp")
        w.close()
        store.close()
        return {"unresolved": set(), "replayed": 1}

    monkeypatch.setattr(hindsight, "ensure", fake_ensure)
    con = connect(store_path)
    rows = con.sql(
        "SELECT run_id, epoch, weight_norm FROM logs WHERE run_id = 'r2' ORDER BY epoch"
    ).fetchall()
    assert rows == [("r2", 1, 7.0), ("r2", 2, 14.0), ("r2", 3, 21.0), ("r2", 4, 28.0)]
    # r1 was not selected: its rows exist with NULLs for the new variable...
    monkeypatch.setattr(hindsight, "ensure", lambda *a, **k: {"unresolved": {"weight_norm"}})
    rows = con.sql("SELECT count(*), count(weight_norm) FROM logs WHERE run_id = 'r1'").fetchall()
    assert rows == [(4, 0)]
    # ...and a later query that selects them asks the engine again (a replayed-only name).
    monkeypatch.setattr(hindsight, "ensure", fake_ensure)
    rows = con.sql("SELECT count(*), count(weight_norm) FROM logs WHERE run_id = 'r1'").fetchall()
    assert rows == [(4, 4)]
    con.close()


def test_a_replay_that_produced_nothing_leaves_a_null_column(store_path: str, monkeypatch) -> None:
    monkeypatch.setattr(
        hindsight, "ensure", lambda *a, **k: SimpleNamespace(unresolved=set(), replayed=0)
    )
    con = connect(store_path)
    assert con.sql("SELECT count(*), count(act_mean) FROM logs").fetchall() == [(8, 0)]
    con.close()
