"""Warm replay workers: a pre-imported process that forks a worker per task.

Nearly all of a short replay is start-up: a fresh worker spends 2-3 s importing torch and
another 1-2 s in the `torch._dynamo` import that `torch.optim` triggers on first use, before
the script's first line of real work. The warm server pays that once: it imports torch,
`torch._dynamo`, numpy and florql's replay path, then waits on a Unix socket and forks one
child per task. A child is a worker like `python -m florql.replay.worker TASK.json`: it takes the
caller's working folder, environment, umask and log file, reseeds the RNGs a fresh interpreter
would seed from the OS (Python's `random`, numpy's global state; torch's default generator is
untouched by the server, so it starts where a fresh process starts), runs the task, and ends
with an ordinary interpreter exit (atexit handlers, thread joins).

Lifetime: the first replay starts the server (in its own session, so it outlives the command);
a server that cannot start (its log says why) leaves `KEY.sock.failed`, and replays in that
environment use fresh interpreters until the file is removed;
it exits after `FLORQL_WARM_SECONDS` (default 300) without a task, and removes its socket.
`FLORQL_WARM_SECONDS=0` turns warm workers off: every task then starts a fresh interpreter.
Only Linux (fork after `import torch` is what PyTorch's own DataLoader does there).

Isolation: one server per (interpreter, florql's source files and their mtimes, environment
except variables that differ between commands of one shell and florql's own runtime settings);
a server from another environment or an older florql is never used. The socket lives in a
folder only the user can enter. A task whose client goes away (the command was killed) is
killed too; a server that died leaves a socket that refuses connections, which the next client
replaces.

Protocol, one connection per task (JSON lines): the client sends
`{"argv": [TASK.json], "cwd", "env", "umask", "log", "module"}` (module: what the child runs
as `python -m` would, florql.replay.worker unless a test says otherwise); the server answers `{"pid": N}` when the
child runs and `{"exit": CODE}` when it ends (negative: killed by that signal, as Popen says).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_IDLE_SECONDS = 300.0
READY_TIMEOUT = 120.0  # a cold server imports torch; on a loaded machine that can take long
SERVER_MODULE = "florql.replay.warm"
WORKER_MODULE = "florql.replay.worker"
PRELOAD = ("torch", "torch._dynamo", "numpy", "florql.replay.worker", "florql.replay_session")
# Differ between two commands of one shell, or are florql's runtime settings (read when used,
# never at import): not part of the server's identity.
_SPAWNED: list[subprocess.Popen] = []  # servers this process started: kept, reaped when done
# CUDA_VISIBLE_DEVICES is read when CUDA starts, which only ever happens in a child (the server
# checks that it never started CUDA itself), so the workers of one replay, one per GPU, share a
# server.
VOLATILE_ENV = {"PWD", "OLDPWD", "SHLVL", "_", "PYTEST_CURRENT_TEST", "COLUMNS", "LINES",
                "CUDA_VISIBLE_DEVICES"}  # fmt: skip


def idle_seconds() -> float:
    """`FLORQL_WARM_SECONDS`, or the default; 0 means warm workers are off."""
    text = os.environ.get("FLORQL_WARM_SECONDS", "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_IDLE_SECONDS
    except ValueError:
        return DEFAULT_IDLE_SECONDS


def enabled() -> bool:
    return sys.platform.startswith("linux") and idle_seconds() > 0


def server_key(env: dict[str, str]) -> str:
    """Identity of a server that may run tasks for a caller with environment `env`."""
    import florql_storage

    import florql

    # The interpreter (`python` and `python3` in one venv are the same) and its environment.
    h = hashlib.sha256(f"{os.path.realpath(sys.executable)}\0{sys.prefix}".encode())
    packages = [*florql.__path__, os.path.dirname(os.path.abspath(florql_storage.__file__))]
    for package in sorted({os.path.abspath(p) for p in packages}):
        for dirpath, _dirs, files in sorted(os.walk(package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, name))
                    h.update(f"{dirpath}/{name}:{st.st_mtime_ns}:{st.st_size}".encode())
    for k in sorted(env):
        if k not in VOLATILE_ENV and not k.startswith("FLORQL_"):
            h.update(f"\0{k}={env[k]}".encode())
    return h.hexdigest()[:20]


def socket_dir() -> str:
    """`FLORQL_WARM_DIR`, else `florql-warm-UID` in the temp folder; private to the user."""
    path = os.environ.get("FLORQL_WARM_DIR") or os.path.join(
        tempfile.gettempdir(), f"florql-warm-{os.getuid()}"
    )
    if len(path) > 70:  # AF_UNIX paths are limited to ~107 bytes
        path = f"/tmp/florql-warm-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not private to this user")
    return path


def stop_servers(folder: str | None = None) -> int:
    """Ask every warm server in `folder` (default: this user's) to exit; returns how many."""
    folder = folder or socket_dir()
    stopped = 0
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".sock.pid"):
            try:
                with open(os.path.join(folder, name)) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
                stopped += 1
            except (OSError, ValueError):
                continue
    for proc in _SPAWNED:  # reap the servers this process started, now that they are told
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    _SPAWNED[:] = [p for p in _SPAWNED if p.returncode is None]
    return stopped


# --- client -----------------------------------------------------------------------------------


class WarmProcess:
    """A task running in a forked warm worker, with the part of `subprocess.Popen`'s interface
    the executor uses: `pid`, `poll()`, `wait()`, `kill()`, `returncode`."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buf = b""
        self.returncode: int | None = None
        msg = self._read(block=True)
        if msg is None or "pid" not in msg:
            conn.close()
            raise OSError(f"warm worker server did not start the task: {msg!r}")
        self.pid = int(msg["pid"])

    def _read(self, block: bool) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            self._conn.setblocking(block)
            try:
                chunk = self._conn.recv(4096)
            except BlockingIOError:
                return None
            if not chunk:  # the server went away: the task's outcome is unknown
                return {"exit": -signal.SIGKILL}
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return dict(json.loads(line))

    def poll(self) -> int | None:
        if self.returncode is None:
            msg = self._read(block=False)
            if msg is not None and "exit" in msg:
                self.returncode = int(msg["exit"])
                self._conn.close()
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            self._conn.setblocking(True)
            msg = self._read(block=True)
            if msg is not None and "exit" in msg:
                self.returncode = int(msg["exit"])
                self._conn.close()
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def running(env: dict[str, str]) -> bool:
    """Whether a warm server for `env` is listening (asks nothing of it)."""
    try:
        conn = _connect(os.path.join(socket_dir(), f"{server_key(env)}.sock"))
    except OSError:
        return False
    if conn is None:
        return False
    conn.close()
    return True


def start_task(
    argv: Sequence[str],
    cwd: str | None,
    env: dict[str, str],
    log: str,
    module: str = WORKER_MODULE,
) -> WarmProcess:
    """Run `python -m MODULE ARGV` (a replay worker) forked from the warm server for `env`,
    starting the server when none runs. Raises OSError when no server can be reached (the
    caller then starts a fresh process)."""
    path = os.path.join(socket_dir(), f"{server_key(env)}.sock")
    conn = _connect(path)
    if conn is None:
        if os.path.exists(path + ".failed"):  # not again on every replay: it costs a start
            raise OSError(f"a warm server failed to start here before; see {path}.log")
        conn = _spawn_and_connect(path, env)
    umask = os.umask(0)
    os.umask(umask)
    request = {"argv": list(argv), "cwd": cwd or os.getcwd(), "env": env, "umask": umask,
               "log": log, "module": module}  # fmt: skip
    conn.sendall(json.dumps(request).encode() + b"\n")
    return WarmProcess(conn)


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def _spawn_and_connect(path: str, env: dict[str, str]) -> socket.socket:
    """Start a server (one at a time per socket: a lock file) and connect when it listens."""
    with open(path + ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)  # another client may have started it meanwhile
        if conn is not None:
            return conn
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead server's socket
        if sys.stderr.isatty():  # a few quiet seconds otherwise
            print(
                "florql: starting a warm replay server (it imports torch once, then stays up "
                f"{idle_seconds():.0f} s after the last replay)",
                file=sys.stderr,
            )
        _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]
        with open(path + ".log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, path, repr(idle_seconds())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd="/", start_new_session=True,
            )  # fmt: skip
        _SPAWNED.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with open(path + ".failed", "w") as f:
                    f.write(f"exit status {proc.returncode}\n")
                raise OSError(f"warm worker server exited with {proc.returncode}; see {path}.log")
            if os.path.exists(path):
                conn = _connect(path)
                if conn is not None:
                    return conn
            time.sleep(0.01)
        proc.kill()
        raise OSError(f"warm worker server did not start within {READY_TIMEOUT:.0f} s")


# --- server -----------------------------------------------------------------------------------


def serve(path: str, idle: float) -> int | tuple[list[str], dict[str, Any]]:
    """Preload, listen at `path`, fork a child per request until idle. Returns the server's
    exit code, or, in a forked child, the request it must run."""
    # A check that CUDA is there must not start it here: a CUDA context does not survive fork.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        print("florql: warm server: importing torch started CUDA; not forking", file=sys.stderr)
        return 1
    tmp = f"{path}.{os.getpid()}.tmp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, path)  # clients see the socket only once it accepts
    with open(path + ".pid", "w") as f:
        f.write(f"{os.getpid()}\n")
    inode = os.stat(path).st_ino
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    server_pid = os.getpid()
    last = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while children or time.monotonic() - last < idle:
            for key, _ in sel.select(timeout=0.05):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    request = _read_request(conn)
                    if request is None:
                        conn.close()
                        continue
                    pid = os.fork()
                    if pid == 0:  # the child: drop the server's sockets, run the task
                        sel.close()
                        listener.close()
                        for c in children.values():
                            c.close()
                        conn.close()
                        return _become_worker(request)
                    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                    children[pid] = conn
                    sel.register(conn, selectors.EVENT_READ, pid)
                else:  # a client spoke or went away: it was killed, so is its task
                    conn = key.fileobj  # type: ignore[assignment]
                    if not conn.recv(1):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(key.data, signal.SIGKILL)
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    conn = children.pop(pid)
                    sel.unregister(conn)
                    with contextlib.suppress(OSError):
                        code = os.waitstatus_to_exitcode(status)
                        conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
                    conn.close()
                    last = time.monotonic()
    finally:  # the server (not a child) removes its socket, unless a newer server's is there
        with contextlib.suppress(FileNotFoundError):
            if os.getpid() == server_pid and os.stat(path).st_ino == inode:
                os.unlink(path)
                os.unlink(path + ".pid")
                if os.path.getsize(path + ".log") == 0:  # nothing went wrong: no trace left
                    os.unlink(path + ".log")
                os.unlink(path + ".lock")  # a racing spawner at worst starts a spare server
    return 0


def _read_request(conn: socket.socket) -> dict[str, Any] | None:
    conn.settimeout(5.0)
    buf = b""
    try:
        while not buf.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        request = json.loads(buf)
    except (OSError, ValueError):
        return None
    conn.settimeout(None)
    return request if isinstance(request, dict) else None


def _become_worker(request: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """In the forked child: take on the caller's process state."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    import random

    random.seed()  # a fresh interpreter seeds these from the OS; the forks must not share them
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    sys.path[0] = request["cwd"]  # `python -m` puts the working folder first
    return list(request["argv"]), request


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m florql.replay.warm SOCKET IDLE_SECONDS", file=sys.stderr)
        return 2
    try:
        outcome = serve(args[0], float(args[1]))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return 0
        raise
    if isinstance(outcome, int):
        return outcome
    worker_argv, request = outcome
    from florql.replay import worker

    module = request.get("module") or WORKER_MODULE
    sys.argv = [module, *worker_argv]
    if module == WORKER_MODULE:
        worker.run_and_exit(lambda: worker.main(worker_argv))
    worker.run_and_exit(lambda: _run_module(module))


def _run_module(module: str) -> int:
    import runpy

    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
