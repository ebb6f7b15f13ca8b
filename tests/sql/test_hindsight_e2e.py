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
