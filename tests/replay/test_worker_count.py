"""The default replay pool is sized by the threads each recorded run trained with."""

from __future__ import annotations

import os
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
    monkeypatch.setattr(executor, "_visible_gpus", lambda: 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert executor.default_workers() == 8
    assert executor.default_workers(threads_per_worker=2) == 4
    assert executor.default_workers(threads_per_worker=3) == 2
    assert executor.default_workers(threads_per_worker=16) == 1


def test_default_workers_is_one_per_gpu_when_cuda_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executor, "_visible_gpus", lambda: 3)
    assert executor.default_workers(threads_per_worker=2) == 3
