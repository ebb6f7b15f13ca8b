"""Shared fixtures for the SQL layer: stores built from known logs through the real writer."""

from __future__ import annotations

import os

import pytest

from tests.sql.storebuild import RunLog, ctx_of, open_store

EPOCHS = range(1, 4)
STEPS = range(0, 4)


def loss_of(run: int, epoch: int, step: int) -> float:
    return round(1.0 / (epoch * 4 + step + 1) + run * 0.5, 6)


def build_standard_store(path: str) -> None:
    """Two finished runs, `epoch` 1..3 with `step` 0..3 inside; see tests/sql/fixtures/README."""
    store = open_store(path)
    w = store.writer()
    for run, (run_id, lr) in enumerate([("r1", 0.1), ("r2", 0.01)]):
        log = RunLog(w, run_id, args={"lr": lr, "bs": 32, "opt": "sgd"}, t0=1_700_000_000.0 + run)
        for epoch in EPOCHS:
            for step in STEPS:
                log.log(ctx_of(epoch=epoch, step=step), {"loss": loss_of(run, epoch, step)})
            values = {"acc": epoch * 0.25 + run * 0.1, "phase": "warm" if epoch == 1 else "main",
                      "correct": epoch % 2 == 0, "hist": [epoch, epoch + 1]}  # fmt: skip
            log.log(ctx_of(epoch=epoch), values)
        log.log([], {"final": 1.5 + run})
        log.end()
    w.close()
    store.close()


@pytest.fixture(scope="session")
def standard_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("standard") / ".florql")
    build_standard_store(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """The CLI's on-disk query cache goes to a temporary folder, never the user's ~/.cache."""
    old = os.environ.get("FLORQL_CACHE_DIR")
    os.environ["FLORQL_CACHE_DIR"] = str(tmp_path_factory.mktemp("sql-cache"))
    yield os.environ["FLORQL_CACHE_DIR"]
    if old is None:
        del os.environ["FLORQL_CACHE_DIR"]
    else:
        os.environ["FLORQL_CACHE_DIR"] = old
