"""Shared fixtures for the recording tests: the example recorded once."""

from __future__ import annotations

import pytest

from tests.recording.recutil import EXAMPLE, TINY, effective_values, florql_cli, run_ids


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny example recorded once: {store, run_id, values}."""
    store = tmp_path_factory.mktemp("example") / "store"
    r = florql_cli("record", "--store", str(store), *TINY, str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    (run_id,) = run_ids(store)
    return {"store": str(store), "run_id": run_id, "values": effective_values(store, run_id)}
