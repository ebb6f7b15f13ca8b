"""A store written before names were checked at the call may hold values named `5` or `""`, or
loops named so: queries skip them with a warning and answer over everything else (cache.py,
invariant 4)."""

from __future__ import annotations

from florql.sql.connection import Connection
from tests.sql.storebuild import RunLog, open_store


def test_values_under_bad_names_are_skipped_with_a_warning_and_the_rest_is_queryable(
    tmp_path, capsys
):
    store = open_store(tmp_path / "st")
    w = store.writer()
    run = RunLog(w, "r1")
    for e in range(3):
        ctx = [["epoch", e, e]]
        run.log(ctx, {"loss": 0.5 * e, 5: 1.0, "": 2.0, "a\0b": 3.0})
    run.log([["", 0, 0]], {"loss": 9.0})  # a loop with an empty name
    run.log([[7, 0, 0], ["step", 0, 0]], {"acc": 9.0})  # a loop named by an int
    run.end()
    w.close()
    store.close()
    con = Connection(str(tmp_path / "st"), replay=False)
    try:
        rows = con.sql("SELECT epoch, loss FROM logs ORDER BY epoch").fetchall()
        star = con.sql("SELECT * FROM logs").columns
        names = con.sql("SELECT DISTINCT name FROM records ORDER BY name").fetchall()
        (runs,) = con.sql("SELECT count(*) FROM runs").fetchall()
    finally:
        con.close()
    assert rows == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert star == ["run_id", "epoch", "step", "loss"] and names == [("loss",)] and runs == (1,)
    err = capsys.readouterr().err
    for shown in ("5", "''", "'a\\x00b'", "7"):
        assert err.count(f"skipping values stored under the name or loop {shown},") == 1, err
    assert "Traceback" not in err
