"""The default replay pool is sized by the threads each recorded run trained with."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest

from florql.replay import executor
from florql.replay.request import _recorded_threads


def _run(threads: object) -> SimpleNamespace:
    return SimpleNamespace(end={"status": "finished", "stats": {"torch_threads": threads}})


def test_recorded_threads_is_the_most_any_selected_run_used() -> None:
    infos = {"a": _run(2), "b": _run(4), "c": SimpleNamespace(end=None)}
    assert _recorded_threads(infos, ["a", "c"]) == 2
    assert _recorded_threads(infos, ["a", "b"]) == 4
    assert _recorded_threads(infos, ["c"]) == 1  # crashed run: unknown, assume one thread


def test_default_workers_divides_cores_by_threads_per_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executor, "visible_gpu_ids", lambda: [])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert executor.default_workers() == 8
    assert executor.default_workers(threads_per_worker=2) == 4
    assert executor.default_workers(threads_per_worker=3) == 2
    assert executor.default_workers(threads_per_worker=16) == 1


def test_default_workers_is_one_per_gpu_when_cuda_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executor, "visible_gpu_ids", lambda: ["0", "1", "2"])
    assert executor.default_workers(threads_per_worker=2) == 3


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert executor.visible_gpu_ids() == ["3", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,-1,0")  # CUDA stops at an invalid entry
    assert executor.visible_gpu_ids() == ["2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert executor.visible_gpu_ids() == []


def test_with_several_gpus_each_worker_gets_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setattr(executor, "visible_gpu_ids", lambda: ["5", "7"])
    fake = [
        sys.executable,
        "-c",
        "import json, os, sys, time; t = json.load(open(sys.argv[1])); time.sleep(0.3); "
        "json.dump({'gpu': os.environ.get('CUDA_VISIBLE_DEVICES')}, open(t['result_path'], 'w'))",
    ]
    outs = executor.run_tasks([{"steps": []} for _ in range(4)], 2, str(tmp_path), command=fake)
    gpus = [o.result["gpu"] for o in outs]
    assert all(o.ok for o in outs)
    assert sorted(gpus[:2]) == ["5", "7"]  # the two started together got different GPUs
    assert set(gpus) == {"5", "7"}


def test_more_workers_than_the_recorded_threads_fit_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from florql.replay.predicate import parse_where
    from florql.replay.request import prepare

    monkeypatch.setattr(executor, "visible_gpu_ids", lambda: [])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    run = SimpleNamespace(meta={}, end={"stats": {"torch_threads": 2}}, status="finished")
    store = SimpleNamespace(runs=lambda: {"a": run}, path="/nowhere")
    ok = prepare(store, ["g"], parse_where(None), 2)
    assert not any("exceed" in w for w in ok.warnings)  # 2 x 2 threads on 4 cores
    crowded = prepare(store, ["g"], parse_where(None), 3)
    assert any("3 workers x 2 torch threads" in w and "--workers 2" in w for w in crowded.warnings)
