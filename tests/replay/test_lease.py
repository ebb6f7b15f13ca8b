"""Two hindsight queries for the same new variable at once replay it once (issue 11 item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from florql_storage import Store

from florql.replay.lease import Leases, plan_under_leases
from tests.replay.conftest import V1, env, record, v2, values


def _query(project: Path, store: Path, sql: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "florql", "query", "--store", str(store), "--format", "csv", sql],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def test_two_concurrent_queries_for_one_new_variable_store_one_copy(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    store = project / ".florql"
    run_id = record(project, store, V1)
    (project / "train.py").write_text(v2(step=False))  # adds wnorm and running2 per epoch
    sql = "SELECT epoch, wnorm FROM logs WHERE wnorm IS NOT NULL ORDER BY epoch"
    procs = [_query(project, store, sql) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].count("\n") == 7  # header + 6 epochs
    replayed = values(store, run_id, {"wnorm"}, replayed=True)
    assert len(replayed) == 6  # one context per epoch ...
    assert all(len(v) == 1 for v in replayed.values())  # ... each stored once, not twice
    # One request replayed; the other waited for its values (or came after it had finished).
    assert len(_replay_begins(store)) == 1


def _replay_begins(store: Path) -> list[dict]:
    s = Store.open(str(store), create=False)
    try:
        return [r.body for r in s.scan(kinds=[9])]  # REPLAY_BEGIN
    finally:
        s.close()


class _Store:
    """A store whose log grows by one record each time `grow` is set (stands for another
    request's replay finishing while this one waited)."""

    def __init__(self) -> None:
        self.last_lsn = 10
        self.grow = False

    def refresh(self) -> None:
        if self.grow:
            self.last_lsn += 1
            self.grow = False


def test_a_plan_made_before_the_wait_is_made_again(tmp_path: Path) -> None:
    from florql_storage.realfs import RealFS

    root = str(tmp_path)
    other, mine = Leases(RealFS(), root), Leases(RealFS(), root)
    assert other.try_take(("r1", "wnorm"))
    store = _Store()
    plans = []

    def make() -> list:
        plans.append(len(plans))
        if len(plans) == 1:  # the first plan: r1 still needs wnorm; the other finishes now
            other.release()
            store.grow = True
            return [("r1", "wnorm")]
        return []  # planned again: the other's values are stored, nothing is left

    assert plan_under_leases(store, mine, make, lambda p: p) == []
    assert plans == [0, 1]
    mine.release()
