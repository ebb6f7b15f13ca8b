"""`florql query` end to end: a variable the recorded run never logged, now logged by the
current script, is replayed from checkpoints for the rows the query selects, once."""

from __future__ import annotations

import csv
import io

from tests.replay.conftest import V1, florql_cli, record, v2


def _count_replays(store) -> int:
    from florql_storage import Store, kinds

    s = Store.open(str(store), create=False)
    try:
        return sum(1 for _ in s.scan(kinds=[kinds.REPLAY_BEGIN]))
    finally:
        s.close()


def test_a_query_on_a_new_variable_replays_only_the_selected_epochs_once(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    store = project / ".florql"
    record(project, store, V1)
    (project / "train.py").write_text(v2(step=False))  # adds per-epoch `wnorm` and `running2`
    sql = "SELECT epoch, wnorm FROM logs WHERE epoch >= 4 AND step IS NULL ORDER BY epoch"
    done = florql_cli("query", "--store", str(store), "--format", "csv", sql, cwd=project)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["epoch"] for r in rows] == ["4", "5"]
    assert all(float(r["wnorm"]) > 0 for r in rows)
    replays = _count_replays(store)
    assert replays >= 1
    # Unselected epochs were not replayed: their rows exist with NULL.
    done = florql_cli("query", "--store", str(store), "--format", "csv", "--no-replay",
                      "SELECT count(*) AS n, count(wnorm) AS w FROM logs WHERE step IS NULL "
                      "AND epoch IS NOT NULL", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    n, w = map(int, done.stdout.splitlines()[1].split(","))
    # Epochs 4 and 5 at least; fewer than all six (the planner may re-execute an epoch before
    # them when the adaptive policy skipped a checkpoint on a loaded machine).
    assert n == 6 and 2 <= w < 6
    # The same query again answers from the store: no second replay.
    done = florql_cli("query", "--store", str(store), "--format", "csv", sql, cwd=project)
    assert done.returncode == 0, done.stderr
    assert list(csv.DictReader(io.StringIO(done.stdout))) == rows
    assert _count_replays(store) == replays


def test_a_variable_no_current_code_logs_is_a_clear_error(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    store = project / ".florql"
    record(project, store, V1)
    done = florql_cli("query", "--store", str(store), "SELECT epoch, epoch_los FROM logs",
                      cwd=project)  # fmt: skip
    assert done.returncode == 2
    assert "no current script logs it" in done.stderr
    assert "did you mean `epoch_loss`?" in done.stderr


def _wnorm_by_run(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in csv.DictReader(io.StringIO(stdout)):
        out.setdefault(row["run_id"], []).append(row["wnorm"])
    return out


def test_a_variable_a_newer_run_logged_is_replayed_for_the_older_runs(tmp_path) -> None:
    # The user adds `wnorm`, trains again, then asks for it across all runs: the older run's
    # values are replayed, and equal the newer run's (same seed and args, CPU: exactly).
    project = tmp_path / "project"
    project.mkdir()
    store = project / ".florql"
    old = record(project, store, V1)
    new = record(project, store, v2(step=False))
    other = record(project, store, V1, name="other.py")  # another script; now unplaceable:
    (project / "other.py").write_text(
        V1.replace(
            '    florql.log("epoch_loss", running)\n',
            '    florql.log("epoch_loss", running)\n    florql.log("wnorm", undefined_name)\n',
        )
    )
    # A look at every column names `wnorm` only through `*`: that replays nothing.
    peek = florql_cli("query", "--store", str(store), "SELECT * FROM logs LIMIT 3", cwd=project)
    assert peek.returncode == 0, peek.stderr
    assert _count_replays(store) == 0
    sql = (
        "SELECT run_id, epoch, wnorm FROM logs WHERE step IS NULL AND epoch IS NOT NULL "
        "ORDER BY run_id, epoch"
    )
    done = florql_cli("query", "--store", str(store), "--format", "csv", sql, cwd=project)
    assert done.returncode == 0, done.stderr
    got = _wnorm_by_run(done.stdout)
    assert len(got[new]) == 6 and all(got[new])
    assert got[old] == got[new]
    # The other script's new statement cannot be placed: a warning, its rows stay NULL.
    assert f"run {other} is not replayed" in done.stderr and "undefined_name" in done.stderr
    assert got[other] == [""] * 6
    assert _count_replays(store) == 1  # only the older run of train.py
    # Asking again, or for a variable every run logged, replays nothing.
    again = florql_cli("query", "--store", str(store), "--format", "csv", sql, cwd=project)
    assert again.returncode == 0 and _wnorm_by_run(again.stdout) == got
    loss = florql_cli("query", "--store", str(store), "SELECT avg(loss) FROM logs", cwd=project)
    assert loss.returncode == 0, loss.stderr
    assert _count_replays(store) == 1
