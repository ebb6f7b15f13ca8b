"""The worker pool, the progress bar and the --where parser, without torch."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from florql.errors import BadInputError
from florql.replay.executor import default_workers, run_tasks
from florql.replay.predicate import parse_where
from florql.replay.progress import Progress

FAKE = """
import json, os, sys, time
task = json.load(open(sys.argv[1]))
if task.get("fail"):
    print("boom: the script raised", file=sys.stderr)
    sys.exit(1)
time.sleep(task.get("sleep", 0))
json.dump({"executed": [s["iteration"] for s in task["steps"]], "pid": os.getpid(),
           "stdin": sys.stdin.read()}, open(task["result_path"], "w"))
"""


@pytest.fixture
def fake(tmp_path: Path) -> list[str]:
    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE)
    return [sys.executable, str(path)]


def test_tasks_run_in_parallel_up_to_the_worker_count(fake, tmp_path: Path) -> None:
    tasks = [{"steps": [{"iteration": i}], "sleep": 0.6} for i in range(4)]
    t0 = time.monotonic()
    outs = run_tasks(tasks, 2, str(tmp_path), command=fake)
    elapsed = time.monotonic() - t0
    assert [o.result["executed"] for o in outs] == [[0], [1], [2], [3]]
    assert len({o.result["pid"] for o in outs}) == 4
    assert 1.2 <= elapsed < 2.3  # two rounds of two, not four in a row


def test_workers_never_get_a_terminal_to_prompt_on(fake, tmp_path: Path) -> None:
    (out,) = run_tasks([{"steps": []}], 1, str(tmp_path), command=fake)
    assert out.ok and out.result["stdin"] == ""


def test_a_failed_worker_is_reported_with_its_stderr(fake, tmp_path: Path) -> None:
    ok, bad = run_tasks(
        [{"steps": []}, {"steps": [], "fail": True}], 2, str(tmp_path), command=fake
    )
    assert ok.ok and not bad.ok
    assert bad.returncode == 1 and "boom: the script raised" in bad.why()


def test_default_worker_count_is_at_least_one_without_importing_torch() -> None:
    assert default_workers() >= 1


def test_progress_is_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(3, stream=out)
    p.update(2)
    p.close()
    assert out.getvalue() == ""


def test_progress_shows_done_spent_and_left() -> None:
    out = io.StringIO()
    ticks = iter([0.0, 4.0, 4.0])
    p = Progress(10, estimate=30.0, stream=out, enabled=True, clock=lambda: next(ticks))
    p.update(2)
    assert "2/10 iterations" in out.getvalue() and "4.0s spent" in out.getvalue()
    assert "~16.0s left" in out.getvalue()


def test_where_predicate_selects_like_sql() -> None:
    s = parse_where("(epoch >= 3 AND epoch < 5) OR run_id = 'x'")
    assert [e for e in range(8) if s.admits("r", {"epoch": e})] == [3, 4]
    assert s.admits("x", {"epoch": 0})
    assert parse_where("5 < epoch").admits("r", {"epoch": 6})
    assert parse_where("upper(run_id) = 'X'").admits("r", {"epoch": 1})  # unknown admits


def test_bad_where_predicate_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="--where"):
        parse_where("epoch >")
