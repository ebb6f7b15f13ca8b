"""The planner picks the least work: selected iterations only, nearest checkpoints, skipped loops."""

from __future__ import annotations

import pytest

from florql.replay.history import AFTER_LOOP, Checkpoint, Iteration, RunHistory, from_records
from florql.replay.planner import TASK_STARTUP_SECONDS, WARM_STARTUP_SECONDS, plan_runs
from florql.replay.predicate import parse_where


def _history(run_id: str = "r1", n: int = 10, ckpts=None, phase: str = "inner_end") -> RunHistory:
    its = [Iteration(i, i, 10.0, 1.0, 50) for i in range(n)]
    ckpts = range(n) if ckpts is None else ckpts
    cks = {i: Checkpoint(f"c{i}", i, phase) for i in ckpts}
    return RunHistory(run_id, {}, "epoch", its, cks, setup_seconds=2.0, total_seconds=102.0)


def _steps(plan) -> list[list[tuple]]:
    return [[(s.iteration, s.action, s.checkpoint) for s in t.steps] for t in plan.tasks]


def test_epoch_greater_than_5_selects_only_iterations_6_and_later() -> None:
    p = plan_runs([(_history(), {"g"}, "execute", set())], parse_where("epoch > 5").admits, 1)
    assert p.runs[0].selected == [6, 7, 8, 9]
    assert p.runs[0].executed == [6, 7, 8, 9]
    assert _steps(p) == [
        [
            (5, "silent_tail", "c5"),
            (6, "execute", None),
            (7, "execute", None),
            (8, "execute", None),
            (9, "execute", None),
        ]
    ]


def test_run_id_filter_plans_only_that_run() -> None:
    wants = [(_history("a"), {"g"}, "outer", set()), (_history("b"), {"g"}, "outer", set())]
    p = plan_runs(wants, parse_where("run_id = 'b'").admits, 2)
    assert [r.run_id for r in p.runs] == ["b"] and {t.run_id for t in p.tasks} == {"b"}


def test_sparse_checkpoints_restore_the_nearest_earlier_one() -> None:
    h = _history(ckpts=[0, 4, 8])
    p = plan_runs([(h, {"g"}, "execute", set())], parse_where("epoch = 7").admits, 1)
    assert _steps(p) == [
        [(4, "silent_tail", "c4"), (5, "execute", None), (6, "execute", None), (7, "execute", None)]
    ]
    assert p.runs[0].selected == [7] and p.runs[0].warnings == []


def test_per_epoch_statement_without_its_checkpoint_reexecutes_from_the_nearest() -> None:
    h = _history(ckpts=[0, 4, 8])
    p = plan_runs([(h, {"w"}, "outer", set())], parse_where("epoch IN (4, 6)").admits, 1)
    assert _steps(p) == [[(4, "skip_inner", "c4"), (5, "execute", None), (6, "execute", None)]]


def test_no_checkpoints_replays_from_the_start_with_a_warning() -> None:
    h = _history(ckpts=[])
    p = plan_runs([(h, {"g"}, "execute", set())], parse_where("epoch = 2").admits, 1)
    assert _steps(p) == [[(0, "execute", None), (1, "execute", None), (2, "execute", None)]]
    assert any("no checkpoint before iteration 2" in w for w in p.warnings)


def test_per_epoch_statement_only_skips_inner_loops() -> None:
    p = plan_runs([(_history(), {"w"}, "outer", set())], parse_where(None).admits, 2)
    assert p.runs[0].executed == [] and p.runs[0].inner_iterations == 0
    actions = {s.action for t in p.tasks for s in t.steps}
    assert actions == {"skip_inner"} and len(p.tasks) == 2
    assert sorted(i for t in p.tasks for i in t.produces) == list(range(10))


def test_iter_end_checkpoints_cannot_skip_and_restore_the_previous_iteration() -> None:
    h = _history(ckpts=range(10), phase="iter_end")
    p = plan_runs([(h, {"w"}, "outer", set())], parse_where("epoch = 3").admits, 1)
    assert _steps(p) == [[(2, "silent_tail", "c2"), (3, "execute", None)]]


def test_work_is_split_across_workers_at_checkpoints_and_each_task_restores_once() -> None:
    p = plan_runs([(_history(), {"g"}, "execute", set())], parse_where("epoch >= 2").admits, 2)
    assert _steps(p) == [
        [
            (1, "silent_tail", "c1"),
            (2, "execute", None),
            (3, "execute", None),
            (4, "execute", None),
            (5, "execute", None),
        ],
        [
            (5, "silent_tail", "c5"),
            (6, "execute", None),
            (7, "execute", None),
            (8, "execute", None),
            (9, "execute", None),
        ],
    ]
    one = plan_runs([(_history(), {"g"}, "execute", set())], parse_where("epoch >= 2").admits, 1)
    assert p.estimate_seconds() < 0.7 * one.estimate_seconds()


def test_covered_iterations_are_not_planned_again() -> None:
    p = plan_runs([(_history(), {"w"}, "outer", {0, 1, 2})], parse_where("epoch < 4").admits, 1)
    assert p.runs[0].selected == [3]
    done = plan_runs(
        [(_history(), {"w"}, "outer", {0, 1, 2, 3})], parse_where("epoch < 4").admits, 1
    )
    assert done.tasks == []


def test_statement_after_the_loop_restores_the_last_state_and_runs_to_the_end() -> None:
    p = plan_runs([(_history(), {"final"}, "after", set())], parse_where(None).admits, 2)
    (task,) = p.tasks
    assert task.run_to_end and [(s.iteration, s.action) for s in task.steps] == [(9, "silent_tail")]
    assert task.produces == [AFTER_LOOP]


def test_history_reads_timings_checkpoints_and_earlier_replays_from_records() -> None:
    recs = [
        (4, ["r", 1, "epoch", [["epoch", 0, 0]], 100.0]),
        (4, ["r", 2, "step", [["epoch", 0, 0], ["step", 0, 0]], 100.5]),
        (4, ["r", 3, "step", [["epoch", 0, 0], ["step", 1, 1]], 101.0]),
        (5, ["r", 4, "step", [["epoch", 0, 0]], 2, 102.0]),
        (4, ["r", 5, "epoch", [["epoch", 1, 1]], 102.5]),
        (5, ["r", 6, "epoch", [], 2, 105.0]),
        (9, {"replay_id": "x", "run_id": "r", "names": ["w"], "iterations": [0, 1]}),
        (
            10,
            {
                "replay_id": "x",
                "run_id": "r",
                "status": "finished",
                "iterations": [1],
                "fidelity": {"checked": 2, "matched": 1, "first_mismatch": {}},
            },
        ),
        (9, {"replay_id": "y", "run_id": "r", "names": ["w"], "iterations": [0]}),
    ]
    h = from_records(
        "r", {"started_at": 99.0}, recs, [("c0", {"ctx": [["epoch", 0, 0]], "phase": "inner_end"})]
    )
    assert [(i.seconds, i.tail_seconds, i.inner) for i in h.iterations] == [
        (2.5, 0.5, 2),
        (2.5, 2.5, 0),
    ]
    assert h.checkpoints[0].ckpt_id == "c0" and h.total_seconds == 6.0
    assert h.covered("w") == {1}  # y never ended and stored nothing
    assert [r.replay_id for r in h.diverged_replays({"w"})] == ["x"]


def test_a_replay_that_never_ended_is_credited_with_the_iterations_it_stored() -> None:
    from florql.replay.history import settle_unfinished

    recs = [
        (4, ["r", 1, "epoch", [["epoch", 0, 0]], 1.0]),
        (4, ["r", 2, "epoch", [["epoch", 1, 1]], 2.0]),
        (9, {"replay_id": "y", "run_id": "r", "names": ["w"], "iterations": [0, 1]}),
    ]
    h = from_records("r", {}, recs, [])
    settle_unfinished(
        h, [["r", 9, "w", 0.5, [["epoch", 1, 1]], 3.0, "y"], ["r", 3, "loss", 1, [], 1.0, ""]]
    )
    assert h.covered("w") == {1}  # iteration 0 was never stored: it will be replayed
    p = plan_runs([(h, {"w"}, "outer", h.covered("w"))], parse_where(None).admits, 1)
    assert p.runs[0].selected == [0]


def test_the_estimate_adds_a_worker_start_per_task_fresh_or_warm() -> None:
    # _history() recorded a 2 s set-up: a fresh worker takes its own start, a warm one almost
    # nothing, per task.
    p = plan_runs([(_history(), {"g"}, "execute", set())], parse_where("epoch >= 2").admits, 1)
    cold = p.estimate_seconds()
    p.warm = True  # what prepare() sets when a warm server runs
    saved = (TASK_STARTUP_SECONDS - WARM_STARTUP_SECONDS) * len(p.tasks)
    assert len(p.tasks) >= 1 and cold - p.estimate_seconds() == pytest.approx(saved)
