"""`florql replay` and the query path that triggers replay, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.replay.conftest import V1, florql_cli, record, v2, values


def test_replay_command_replays_selected_iterations_of_new_statements(fresh, script) -> None:
    current = script(v2(step=False))
    r = florql_cli(
        "replay",
        "--store",
        str(fresh.store),
        "--where",
        "epoch >= 4",
        "--workers",
        "1",
        "--name",
        "wnorm",
        current,
        cwd=fresh.project,
    )
    assert r.returncode == 0, r.stderr
    assert f"run {fresh.run_id}: replayed wnorm" in r.stdout
    assert "replayed 2 values over 2 iterations" in r.stdout
    got = values(fresh.store, fresh.run_id, {"wnorm"}, replayed=True)
    assert sorted(k[1][0][1] for k in got) == [4, 5]
    again = florql_cli(
        "replay",
        "--store",
        str(fresh.store),
        "--where",
        "epoch >= 4",
        "--name",
        "wnorm",
        current,
        cwd=fresh.project,
    )
    assert again.returncode == 0 and "nothing to replay" in again.stdout


def test_replay_command_exit_codes_for_bad_input(fresh, script) -> None:
    current = script(v2())
    bad_where = florql_cli(
        "replay", "--store", str(fresh.store), "--where", "epoch >", current, cwd=fresh.project
    )
    assert bad_where.returncode == 2 and "--where" in bad_where.stderr
    bad_run = florql_cli(
        "replay", "--store", str(fresh.store), "--run", "nope", current, cwd=fresh.project
    )
    assert bad_run.returncode == 2 and "no run nope" in bad_run.stderr
    bad_name = florql_cli(
        "replay", "--store", str(fresh.store), "--name", "zzz", current, cwd=fresh.project
    )
    assert bad_name.returncode == 2 and "zzz" in bad_name.stderr


def test_replay_command_fails_with_exit_1_when_the_replay_fails(fresh, script) -> None:
    broken = v2(step=False).replace(
        '    florql.log("running2", running * 2)', '    florql.log("running2", running / 0)'
    )
    r = florql_cli(
        "replay",
        "--store",
        str(fresh.store),
        "--name",
        "running2",
        "--workers",
        "1",
        script(broken),
        cwd=fresh.project,
    )
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr


def test_query_for_a_new_variable_replays_it_and_answers(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    store = project / ".florql"
    record(project, store, V1)
    (project / "train.py").write_text(v2())  # the user edits the script in place
    q = "SELECT epoch, wnorm FROM logs WHERE epoch > 3 AND wnorm IS NOT NULL ORDER BY epoch"
    explain = florql_cli("explain", "--store", str(store), q, cwd=project)
    assert explain.returncode == 0, explain.stderr
    r = florql_cli("query", "--store", str(store), "--format", "json", q, cwd=project)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["epoch"] for row in rows] == [4, 5] and all(row["wnorm"] > 0 for row in rows)
    again = florql_cli("query", "--store", str(store), "--format", "json", q, cwd=project)
    assert json.loads(again.stdout) == rows


def test_replay_command_without_names_replays_every_new_statement_and_leaves_the_checkout_alone(
    fresh, script
) -> None:
    current = script(v2())
    folder = Path(current).parent
    before = {p.name: p.read_text() for p in folder.iterdir()}
    r = florql_cli(
        "replay", "--store", str(fresh.store), "--where", "epoch = 5", current, cwd=fresh.project
    )
    assert r.returncode == 0, r.stderr
    assert f"run {fresh.run_id}: replayed gnorm, running2, wnorm" in r.stdout
    got = values(fresh.store, fresh.run_id, {"gnorm", "running2", "wnorm"}, replayed=True)
    assert {k[0] for k in got} == {"gnorm", "running2", "wnorm"}
    assert {p.name: p.read_text() for p in folder.iterdir()} == before
