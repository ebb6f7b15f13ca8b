"""The warm server's folder, files and socket resist another local user (issue 11 item 1).

The attacks run as a second uid (`nobody`, through `os.setuid` in a forked child) where the
suite has root; without root only the descriptor checks run. Each attack is the one the issue
reproduced: a link planted at the folder's path before the check, a link swapped in after it,
a socket of another user answering as the server, another user's process asking the server to
run a task.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from florql.replay import private_dir, warm
from florql.replay.private_dir import PrivateDir

pytestmark = pytest.mark.skipif(not warm.enabled(), reason="warm workers need Linux")
NOBODY = 65534
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="a second uid needs root")


def fork_as_nobody(action: Callable[[], object]) -> int:
    """Start `action` in a forked child as uid/gid nobody; the child's pid (it exits 0 when
    `action` returned)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        except BaseException as e:  # shown in the test's output
            print(f"as nobody: {e!r}", flush=True)
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def as_nobody(action: Callable[[], object]) -> int:
    """Run `action` as uid/gid nobody and wait; its exit code (0: it returned)."""
    return exit_code(fork_as_nobody(action))


@pytest.fixture
def arena() -> Path:
    """A folder every user may write (like /tmp without the sticky bit's protection)."""
    path = Path(tempfile.mkdtemp(prefix="fw-arena-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_a_folder_that_is_not_private_is_refused(tmp_path: Path) -> None:
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    with pytest.raises(OSError, match="mode 755 lets others in"):
        PrivateDir.open(str(open_folder))
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="not a private folder"):
        PrivateDir.open(str(tmp_path / "file"))


def test_a_link_to_a_private_folder_is_refused_too(tmp_path: Path) -> None:
    # The old check (a stat that follows links) passed this: the link's target is ours, 0700.
    target = tmp_path / "mine"
    target.mkdir(mode=0o700)
    os.symlink(target, tmp_path / "link")
    with pytest.raises(OSError, match="not a private folder of this user"):
        PrivateDir.open(str(tmp_path / "link"))


@needs_root
def test_planted_link_attack_fails(arena: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim_folder = arena / f"florql-warm-{os.getuid()}"
    evil = arena / "evil"

    def plant() -> None:
        evil.mkdir(mode=0o700)
        os.symlink(evil, victim_folder)

    assert as_nobody(plant) == 0
    monkeypatch.setenv("FLORQL_WARM_DIR", str(victim_folder))
    with pytest.raises(OSError, match="not a private folder"):
        warm.socket_dir()
    with pytest.raises(OSError, match="not a private folder"):
        warm.start_task(["task.json"], str(arena), dict(os.environ), str(arena / "log"))
    assert warm.stop_servers(str(victim_folder)) == 0
    assert os.listdir(evil) == []  # no socket, pid, lock or log file went there


@needs_root
def test_swapped_link_attack_fails(arena: Path) -> None:
    name = "k" * 20 + ".sock"
    path = arena / "florql-warm-0"
    folder = PrivateDir.open(str(path))  # the victim checked its folder ...
    evil = arena / "evil"
    got = arena / "got"

    def swap_and_listen() -> None:
        # ... then the attacker moves it away and puts a link to its own folder in its place,
        # with a socket there that would receive the victim's request.
        os.rename(path, arena / "moved")
        evil.mkdir(mode=0o755)
        os.symlink(evil, path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(evil / name))
        listener.listen(1)
        os.chmod(evil / name, 0o777)
        listener.settimeout(3)
        try:
            conn, _ = listener.accept()
            got.write_bytes(conn.recv(65536) or b"connected")
        except TimeoutError:
            pass

    pid = fork_as_nobody(swap_and_listen)
    deadline = time.monotonic() + 10
    while not (evil / name).exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        # Every use goes through the descriptor: the moved folder, never the attacker's.
        assert warm._connect(folder, name) is None
        lock = folder.open_file(name + ".lock", os.O_RDWR | os.O_CREAT)
        os.close(lock)
        assert sorted(os.listdir(arena / "moved")) == [name + ".lock"]
    finally:
        folder.close()
        assert exit_code(pid) == 0
    assert not got.exists()  # the attacker's socket heard nothing
    assert sorted(os.listdir(evil)) == [name]


@needs_root
def test_a_server_of_another_user_is_sent_nothing(arena: Path) -> None:
    name = "other.sock"
    got = arena / "got"

    def listen() -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(arena / name))
        listener.listen(1)
        listener.settimeout(10)
        conn, _ = listener.accept()
        conn.settimeout(2)
        try:
            got.write_bytes(conn.recv(65536))
        except TimeoutError:
            got.write_bytes(b"")

    pid = fork_as_nobody(listen)
    while not (arena / name).exists():
        time.sleep(0.01)
    fd = os.open(arena, os.O_RDONLY | os.O_DIRECTORY)
    try:  # as if a check had been fooled: the peer check still refuses to talk
        with pytest.raises(OSError, match="runs as another user"):
            warm._connect(PrivateDir(str(arena), fd), name)
    finally:
        os.close(fd)
        assert exit_code(pid) == 0
    assert got.read_bytes() == b""


@needs_root
def test_the_server_refuses_requests_from_another_user(arena: Path) -> None:
    name = "s.sock"
    marker = arena / "ran"
    pid = os.fork()
    if pid == 0:  # the server, listening where the attacker can reach it (as if it could)
        code = 1
        try:
            fd = os.open(arena, os.O_RDONLY | os.O_DIRECTORY)
            out = warm.serve(PrivateDir(str(arena), fd), name, 2.0, preload=())
            code = 0 if isinstance(out, int) else 99  # a forked task child ends here
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while not (arena / name).exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.chmod(arena / name, 0o777)  # reachable by the attacker (a 0700 folder would stop it)
    request = {"argv": [str(marker)], "cwd": str(arena), "env": {}, "umask": 0o22,
               "log": str(arena / "task.log"), "module": "florql_none"}  # fmt: skip

    def attack() -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(arena / name))
        s.settimeout(5)
        try:
            s.sendall(json.dumps(request).encode() + b"\n")
            answer = s.recv(4096)
        except (BrokenPipeError, ConnectionResetError):  # closed before reading the request
            answer = b""
        assert answer == b""  # no {"pid": ...}: nothing started

    try:
        assert as_nobody(attack) == 0
        # The same request from this user starts a task (its child exits 99 at once).
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(arena / name))
        s.sendall(json.dumps(request).encode() + b"\n")
        s.settimeout(20)
        buf = b""
        while buf.count(b"\n") < 2:
            chunk = s.recv(4096)
            assert chunk, buf
            buf += chunk
        first, second = (json.loads(line) for line in buf.splitlines()[:2])
        assert "pid" in first and second == {"exit": 99}
        s.close()
    finally:
        assert exit_code(pid) == 0


def test_a_request_carries_only_the_variables_outside_the_server_identity() -> None:
    env = {"HOME": "/root", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "PWD": "/here",
           "FLORQL_STORE": "/s", "CUDA_VISIBLE_DEVICES": "1"}  # fmt: skip
    sent = warm.outside_identity(env)
    assert sent == {"PWD": "/here", "FLORQL_STORE": "/s", "CUDA_VISIBLE_DEVICES": "1"}
    # The server was started with the caller's environment (same key): the child gets it back.
    server_env = {**env, "PWD": "/", "FLORQL_STORE": "/old", "OLDPWD": "/x"}
    assert warm.server_key(server_env) == warm.server_key(env)
    assert warm._child_env(server_env, sent) == env


def test_a_pid_file_is_only_a_claim(tmp_path: Path) -> None:
    folder = PrivateDir.open(str(tmp_path / "w"))
    try:
        fd = folder.open_file("x.sock.pid", os.O_WRONLY | os.O_CREAT)
        os.write(fd, f"{os.getpid()}\n".encode())  # a live process, but no warm server
        os.close(fd)
        assert not warm._is_my_server(os.getpid())
        assert warm.stop_servers(folder.path) == 0
    finally:
        folder.close()
    assert stat.S_IMODE(os.stat(tmp_path / "w").st_mode) == 0o700
    a, b = socket.socketpair()
    with a, b:
        assert private_dir.peer_is_me(a)
