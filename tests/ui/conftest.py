"""Shared fixtures for the UI: a live `florql ui` server in a thread, and headless Chromium.

Browser tests drive Debian's Chromium with `--dump-dom` (the DOM after the page's scripts ran,
with virtual time so its fetches finish) and `--screenshot`. Screenshots are test artefacts:
kept under `bench/out/ui/` (printed by each test) so that a person can look at them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = REPO / "bench" / "out" / "ui"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass
class Served:
    """A running `florql ui` app: `base` URL (no token) and its `token`."""

    base: str
    token: str

    @property
    def url(self) -> str:
        return f"{self.base}/?token={self.token}"

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        return self.request(path, token=token)

    def request(
        self, path: str, body: bytes | None = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request; `token` None sends the server's own."""
        headers = {"Content-Type": "application/json"}
        if token != "":
            headers["X-Florql-Token"] = self.token if token is None else token
        req = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(store: str | Path, token: str = "test-token-0123456789") -> Iterator[Served]:
    """Run the app for `store` on 127.0.0.1 in a thread until the generator is closed."""
    import uvicorn

    from florql.ui.server import create_app

    app = create_app(str(store), token)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the UI server did not start within 30 s"
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.reader.close()


@pytest.fixture(scope="session")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The SQL layer's standard store: runs r1, r2; loss per step, acc per epoch, final."""
    from tests.sql.conftest import build_standard_store

    path = str(tmp_path_factory.mktemp("ui") / ".florql")
    build_standard_store(path)
    return path


@pytest.fixture(scope="session")
def served(ui_store: str) -> Iterator[Served]:
    yield from serve(ui_store)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> str:
    """Chromium's path; CI (root) installs it through `make test`, elsewhere a skip says so."""
    found = chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: `make test` installs it (apt-get)")
        pytest.skip("browser tests need Chromium: `apt-get install chromium` (as root)")
    return found


def run_chromium(browser: str, url: str, *, dump: bool = True, screenshot: str | None = None,
                 budget_ms: int = 20000, timeout: float = 180) -> str:  # fmt: skip
    """The DOM of `url` after its scripts ran (virtual time `budget_ms`), and/or a screenshot."""
    with tempfile.TemporaryDirectory(prefix="florql-chromium-") as profile:
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", "--window-size=1280,900"]  # fmt: skip
        cmd += ["--dump-dom"] if dump else [f"--screenshot={screenshot}"]
        done = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(browser: str, url: str, name: str, budget_ms: int = 20000) -> Path:
    """A PNG of `url` kept as a test artefact under bench/out/ui/ (path printed)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    run_chromium(browser, url, dump=False, screenshot=str(path), budget_ms=budget_ms)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    print(f"screenshot: {path}")
    return path
