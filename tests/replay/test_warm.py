"""Warm replay workers (florql/replay/warm.py): a forked child behaves like a fresh
`python -m MODULE` in the caller's folder, environment and umask; the server is reused, keyed by
environment, killed tasks and dead servers are handled, an idle server goes away."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from florql.replay import warm

pytestmark = pytest.mark.skipif(not warm.enabled(), reason="warm workers need Linux")

PROBE = textwrap.dedent(
    """\
    import json, os, random, sys, time
    preloaded = "torch" in sys.modules  # before this module imports anything heavy
    import numpy
    out = {"cwd": os.getcwd(), "env": os.environ.get("FLORQL_PROBE"), "argv": sys.argv[1:],
           "pid": os.getpid(), "ppid": os.getppid(), "preloaded": preloaded,
           "name": __name__, "umask": os.umask(0), "random": random.random(),
           "numpy": float(numpy.random.rand()), "stdin": sys.stdin.read()}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
    print("probe says hello")
    if len(sys.argv) > 2 and sys.argv[2] == "sleep":
        time.sleep(60)
    sys.exit(int(os.environ.get("FLORQL_PROBE_EXIT", "0")))
    """
)


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "probe_mod.py").write_text(PROBE)
    return tmp_path


def _run(probe_dir: Path, name: str, *extra: str, env: dict[str, str] | None = None):
    out = probe_dir / f"{name}.json"
    log = probe_dir / f"{name}.log"
    proc = warm.start_task(
        [str(out), *extra], str(probe_dir), {**os.environ, **(env or {})}, str(log), "probe_mod"
    )
    return proc, out, log


def test_a_task_runs_like_python_m_in_the_callers_folder_environment_and_umask(
    probe_dir: Path,
) -> None:
    old = os.umask(0o027)
    try:
        proc, out, log = _run(
            probe_dir, "a", env={"FLORQL_PROBE": "seen", "FLORQL_PROBE_EXIT": "3"}
        )
    finally:
        os.umask(old)
    assert proc.wait() == 3  # the module's exit code, as Popen reports it
    got = json.loads(out.read_text())
    assert got["cwd"] == str(probe_dir) and got["env"] == "seen"
    assert got["argv"] == [str(out)] and got["name"] == "__main__"
    assert got["umask"] == 0o027 and got["stdin"] == ""
    assert got["preloaded"], "the child was not forked from a server that imported torch"
    assert got["pid"] == proc.pid
    assert "probe says hello" in log.read_text()


def test_the_server_is_reused_and_each_fork_gets_fresh_rngs(probe_dir: Path) -> None:
    runs = [_run(probe_dir, f"r{i}") for i in range(3)]
    assert all(p.wait() == 0 for p, _, _ in runs)
    got = [json.loads(out.read_text()) for _, out, _ in runs]
    assert len({g["ppid"] for g in got}) == 1  # one server forked all three
    assert len({g["pid"] for g in got}) == 3
    assert len({g["random"] for g in got}) == 3 and len({g["numpy"] for g in got}) == 3


def test_running_tells_whether_a_server_for_this_environment_listens(
    probe_dir: Path, monkeypatch
) -> None:
    from florql.replay import executor

    monkeypatch.setenv("FLORQL_WARM_DIR", tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    assert not warm.running(dict(os.environ)) and not executor.warm_server_running()
    proc, _, _ = _run(probe_dir, "w", env=executor.worker_env())  # as the executor starts one
    assert proc.wait() == 0
    assert executor.warm_server_running()  # what explain's estimate asks
    assert not warm.running({**os.environ, "OMP_NUM_THREADS": "7"})  # another environment
    warm.stop_servers()


def test_kill_ends_a_running_task_with_the_signal(probe_dir: Path) -> None:
    proc, out, _ = _run(probe_dir, "k", "sleep")
    _wait_for(out.exists)
    assert proc.poll() is None
    proc.kill()
    assert proc.wait() == -signal.SIGKILL


def test_a_task_whose_client_goes_away_is_killed(probe_dir: Path) -> None:
    proc, out, _ = _run(probe_dir, "g", "sleep")
    _wait_for(out.exists)
    proc._conn.close()  # the command that asked was killed
    _wait_for(lambda: not _alive(proc.pid))


def test_servers_are_keyed_by_environment_not_by_volatile_variables() -> None:
    base = {"PATH": "/usr/bin", "OMP_NUM_THREADS": "2"}
    key = warm.server_key(base)
    assert warm.server_key({**base, "PWD": "/elsewhere", "FLORQL_STORE": "x"}) == key
    assert warm.server_key({**base, "OMP_NUM_THREADS": "1"}) != key
    assert warm.server_key({**base, "PYTHONHASHSEED": "0"}) != key


def test_servers_are_keyed_by_the_florql_code_they_preloaded() -> None:
    # A changed florql or florql_storage file (an upgrade, an edit) means a new server.
    import florql_storage

    base = {"PATH": "/usr/bin"}
    path = florql_storage.__file__
    st = os.stat(path)
    key = warm.server_key(base)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        assert warm.server_key(base) != key
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert warm.server_key(base) == key


def test_a_dead_servers_socket_is_replaced_and_an_idle_server_exits(
    probe_dir: Path, monkeypatch
) -> None:
    folder = tempfile.mkdtemp(prefix="fw-", dir="/tmp")
    monkeypatch.setenv("FLORQL_WARM_DIR", folder)
    monkeypatch.setenv("FLORQL_WARM_SECONDS", "3")
    try:
        proc, out, _ = _run(probe_dir, "d1")
        assert proc.wait() == 0
        first = json.loads(out.read_text())["ppid"]
        os.kill(first, signal.SIGKILL)  # leaves its socket file behind
        _wait_for(lambda: not _alive(first))
        assert any(n.endswith(".sock") for n in os.listdir(folder))
        proc, out, _ = _run(probe_dir, "d2")
        assert proc.wait() == 0
        second = json.loads(out.read_text())["ppid"]
        assert second != first
        # Idle for FLORQL_WARM_SECONDS: the server exits and removes its socket.
        _wait_for(lambda: not _alive(second), timeout=30)
        assert os.listdir(folder) == []  # socket, pid, lock and (empty) log all removed
    finally:
        warm.stop_servers(folder)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_server_that_cannot_start_is_not_retried_and_workers_start_fresh(
    probe_dir: Path, monkeypatch, capsys
) -> None:
    from florql.replay import executor

    monkeypatch.setenv("FLORQL_WARM_DIR", tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    monkeypatch.setattr(warm, "SERVER_MODULE", "florql_no_such_module")
    with pytest.raises(OSError, match="exited with 1"):
        _run(probe_dir, "f1")
    with pytest.raises(OSError, match="failed to start here before"):  # no second attempt
        _run(probe_dir, "f2")
    # A replay then runs its workers as fresh interpreters: this task is malformed, and the
    # fresh worker says so.
    outs = executor.run_tasks([{"steps": []}, {"steps": []}], 1, str(probe_dir))
    assert all(o.returncode == 2 and "replay task has no 'replay_id'" in o.stderr for o in outs)
    assert capsys.readouterr().err.count("warm replay workers unavailable") == 1  # said once
