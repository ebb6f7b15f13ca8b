"""Session-wide test set-up: warm replay servers (florql.replay.warm) started by the tests live
in a folder of this test session and are stopped when it ends, so no test talks to a user's
server and none outlives the run."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_warm_servers():
    folder = tempfile.mkdtemp(prefix="fw-", dir="/tmp")  # short: AF_UNIX path limit
    old = {k: os.environ.get(k) for k in ("FLORQL_WARM_DIR", "FLORQL_WARM_SECONDS")}
    os.environ["FLORQL_WARM_DIR"] = folder
    os.environ["FLORQL_WARM_SECONDS"] = "120"
    yield folder
    from florql.replay import warm

    warm.stop_servers(folder)
    shutil.rmtree(folder, ignore_errors=True)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
