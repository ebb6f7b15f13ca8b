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
a server from another environment or an older florql is never used. A task whose client goes
away (the command was killed) is killed too; a server that died leaves a socket that refuses
connections, which the next client replaces.

Security (issue 11): only this user reaches the server, and nothing of the user's goes to
anyone else. The socket, pid, lock and log files live in `$TMPDIR/florql-warm-UID` (or
`FLORQL_WARM_DIR`), a folder checked on a descriptor opened without following links (owner
this user, mode 0700) and then used only through that descriptor (`private_dir.py`): a link
planted at its path, or swapped in after the check, is never followed. The server gets the
descriptor itself (it never resolves the path), accepts only connections whose peer runs as
this user (SO_PEERCRED), and a client sends a request only to a server of its own user. A
pid read from the folder is signalled only when it is this user's warm server. The environment
crosses the socket only in part: the server was started with the caller's environment (its
identity, `server_key`, covers every variable), so a request carries only the variables outside
that identity (the volatile ones and `FLORQL_*`), and the child rebuilds exactly the caller's
environment from the server's own and those.

Protocol, one connection per task (JSON lines): the client sends
`{"argv": [TASK.json], "cwd", "env", "umask", "log", "module"}` (env: the variables outside the
server's identity; module: what the child runs as `python -m` would, florql.replay.worker
unless a test says otherwise); the server answers `{"pid": N}` when the child runs and
`{"exit": CODE}` when it ends (negative: killed by that signal, as Popen says).
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
import time
from collections.abc import Sequence
from typing import Any

from florql import config
from florql.replay.private_dir import PrivateDir, not_private, peer_is_me

READY_TIMEOUT = 120.0  # a cold server imports torch; on a loaded machine that can take long
SERVER_MODULE = "florql.replay.warm"
# The florql package folder (found from this file: importing `florql` here would point up).
FLORQL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_MODULE = "florql.replay.worker"
PRELOAD = ("torch", "torch._dynamo", "numpy", "florql.replay.worker", "florql.replay.task")
_SPAWNED: list[subprocess.Popen] = []  # servers this process started: kept, reaped when done
# Differ between two commands of one shell, or are florql's runtime settings (read when used,
# never at import): not part of the server's identity.
# CUDA_VISIBLE_DEVICES is read when CUDA starts, which only ever happens in a child (the server
# checks that it never started CUDA itself), so the workers of one replay, one per GPU, share a
# server.
VOLATILE_ENV = {"PWD", "OLDPWD", "SHLVL", "_", "PYTEST_CURRENT_TEST", "COLUMNS", "LINES",
                "CUDA_VISIBLE_DEVICES"}  # fmt: skip


def enabled() -> bool:
    return sys.platform.startswith("linux") and config.warm_seconds() > 0


def server_key(env: dict[str, str]) -> str:
    """Identity of a server that may run tasks for a caller with environment `env`."""
    import florql_storage

    # The interpreter (`python` and `python3` in one venv are the same) and its environment.
    h = hashlib.sha256(f"{os.path.realpath(sys.executable)}\0{sys.prefix}".encode())
    packages = [FLORQL_DIR, os.path.dirname(os.path.abspath(florql_storage.__file__))]
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
    """`FLORQL_WARM_DIR`, else `florql-warm-UID` in the temp folder; created private to the
    user and checked (OSError when it is a link, another user's or open to others)."""
    path = config.warm_dir()
    PrivateDir.open(path).close()
    return path


def stop_servers(folder: str | None = None) -> int:
    """Ask every warm server in `folder` (default: this user's) to exit; returns how many."""
    stopped = 0
    path = folder or config.warm_dir()
    try:
        private = PrivateDir.open(path) if os.path.lexists(path) else None
    except OSError:
        private = None
    for name in sorted(private.listdir()) if private else []:
        if name.endswith(".sock.pid"):
            pid = _read_pid(private, name)  # type: ignore[arg-type]
            if pid is not None and _is_my_server(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
                    stopped += 1
    if private:
        private.close()
    for proc in _SPAWNED:  # reap the servers this process started, now that they are told
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    _SPAWNED[:] = [p for p in _SPAWNED if p.returncode is None]
    return stopped


def _read_pid(folder: PrivateDir, name: str) -> int | None:
    try:
        fd = folder.open_file(name, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        text = f.read(32).strip()
    return int(text) if text.isdigit() else None


def _is_my_server(pid: int) -> bool:
    """Whether `pid` is a warm server of this user (a pid file is only a claim)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, StopIteration):
        return False
    return int(uid_line.split()[1]) == os.getuid() and SERVER_MODULE.encode() in argv


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
        folder = PrivateDir.open(config.warm_dir())
    except OSError:
        return False
    try:
        conn = _connect(folder, f"{server_key(env)}.sock")
    except OSError:
        return False
    finally:
        folder.close()
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
    name = f"{server_key(env)}.sock"
    folder = PrivateDir.open(config.warm_dir())
    try:
        conn = _connect(folder, name)
        if conn is None:
            if folder.exists(name + ".failed"):  # not again on every replay: it costs a start
                raise OSError(
                    f"a warm server failed to start here before; see {folder.path}/{name}.log"
                )
            conn = _spawn_and_connect(folder, name, env)
    finally:
        folder.close()
    umask = os.umask(0)
    os.umask(umask)
    request = {"argv": list(argv), "cwd": cwd or os.getcwd(), "env": outside_identity(env),
               "umask": umask, "log": log, "module": module}  # fmt: skip
    conn.sendall(json.dumps(request).encode() + b"\n")
    return WarmProcess(conn)


def outside_identity(env: dict[str, str]) -> dict[str, str]:
    """The variables of `env` that `server_key` leaves out: all a request needs to carry."""
    return {k: v for k, v in env.items() if k in VOLATILE_ENV or k.startswith("FLORQL_")}


def _connect(folder: PrivateDir, name: str) -> socket.socket | None:
    """A connection to this user's server at `name`, or None when none listens.

    Raises:
        OSError: the socket's server runs as another user (nothing was sent to it).
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(folder.sock_path(name))
    except OSError:
        s.close()
        return None
    if not peer_is_me(s):
        s.close()
        raise OSError(f"the warm server at {folder.path}/{name} runs as another user")
    return s


def _spawn_and_connect(folder: PrivateDir, name: str, env: dict[str, str]) -> socket.socket:
    """Start a server (one at a time per socket: a lock file) and connect when it listens."""
    lock = folder.open_file(name + ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(folder, name)  # another client may have started it meanwhile
        if conn is not None:
            return conn
        folder.unlink(name)  # a dead server's socket
        if sys.stderr.isatty():  # a few quiet seconds otherwise
            print(
                "florql: starting a warm replay server (it imports torch once, then stays up "
                f"{config.warm_seconds():.0f} s after the last replay)",
                file=sys.stderr,
            )
        return _start_server(folder, name, env)
    finally:
        os.close(lock)


def _start_server(folder: PrivateDir, name: str, env: dict[str, str]) -> socket.socket:
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]
    log = folder.open_file(name + ".log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:  # the server inherits the checked folder's descriptor: it never resolves the path
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, str(folder.fd), name, repr(config.warm_seconds())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd="/", start_new_session=True, pass_fds=(folder.fd,),
        )  # fmt: skip
    finally:
        os.close(log)
    _SPAWNED.append(proc)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            failed = folder.open_file(name + ".failed", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(failed, f"exit status {proc.returncode}\n".encode())
            os.close(failed)
            raise OSError(
                f"warm worker server exited with {proc.returncode}; see {folder.path}/{name}.log"
            )
        if folder.exists(name):
            conn = _connect(folder, name)
            if conn is not None:
                return conn
        time.sleep(0.01)
    proc.kill()
    raise OSError(f"warm worker server did not start within {READY_TIMEOUT:.0f} s")


# --- server -----------------------------------------------------------------------------------


def serve(
    folder: PrivateDir, path: str, idle: float, preload: Sequence[str] = PRELOAD
) -> int | tuple[list[str], dict[str, Any]]:
    """Preload, listen at `path` (a name in `folder`), fork a child per request of this user
    until idle. Returns the server's exit code, or, in a forked child, the request it must run
    (with its environment rebuilt: see the module docstring)."""
    base_env = dict(os.environ)  # the caller's, as the client started this server
    # A check that CUDA is there must not start it here: a CUDA context does not survive fork.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for module in preload:
        with contextlib.suppress(ImportError):
            __import__(module)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        print("florql: warm server: importing torch started CUDA; not forking", file=sys.stderr)
        return 1
    tmp = f"{path}.{os.getpid()}.tmp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(folder.sock_path(tmp))
    listener.listen(64)
    folder.rename(tmp, path)  # clients see the socket only once it accepts
    pid_fd = folder.open_file(path + ".pid", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(pid_fd, f"{os.getpid()}\n".encode())
    os.close(pid_fd)
    inode = folder.inode(path)
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
                    request = _read_request(conn) if peer_is_me(conn) else None
                    if request is None:  # another user's process, or not a request
                        conn.close()
                        continue
                    request["env"] = _child_env(base_env, request.get("env") or {})
                    pid = os.fork()
                    if pid == 0:  # the child: drop the server's sockets, run the task
                        sel.close()
                        listener.close()
                        for c in children.values():
                            c.close()
                        conn.close()
                        folder.close()
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
            if os.getpid() == server_pid and folder.inode(path) == inode:
                folder.unlink(path)
                folder.unlink(path + ".pid")
                if folder.size(path + ".log") == 0:  # nothing went wrong: no trace left
                    folder.unlink(path + ".log")
                folder.unlink(path + ".lock")  # a racing spawner at worst starts a spare server
    return 0


def _child_env(base: dict[str, str], sent: dict[str, str]) -> dict[str, str]:
    """The caller's environment: the server's (equal outside the volatile and FLORQL_*
    variables, or the key would differ) with those taken from the request."""
    kept = {k: v for k, v in base.items() if k not in VOLATILE_ENV and not k.startswith("FLORQL_")}
    return {**kept, **outside_identity({str(k): str(v) for k, v in sent.items()})}


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
    fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
    if len(args) != 3 or not args[0].isdigit():
        print("usage: python -m florql.replay.warm FOLDER_FD SOCKET_NAME IDLE_SECONDS",
              file=sys.stderr)  # fmt: skip
        return 2
    fd = int(args[0])
    problem = not_private(os.fstat(fd))  # checked again here: trust no descriptor blindly
    if problem:
        print(f"florql: warm server: the socket folder is {problem}", file=sys.stderr)
        return 1
    try:
        outcome = serve(PrivateDir(f"/proc/self/fd/{fd}", fd), args[1], float(args[2]))
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
