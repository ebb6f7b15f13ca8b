"""The recording session: turns API calls into logical records (docs/INTERFACES.md §2).

One session per process is current (`CURRENT`). `florql record` installs one before running the
script; otherwise the first API call starts one on the default store and ends it at interpreter
exit (status `failed` when an exception reached `sys.excepthook`, else `finished`).

Hot path: `log` validates the name and value (`florql.values`: exactly what the store can hold,
refused at the call otherwise), then appends one tuple to a deque; the flusher thread
(`florql.flusher`) drains the deque every `FLUSH_SECONDS`, builds record bodies and hands them to
the LogWriter in one group commit. Every record of the run takes the next value of the run's
`seq` counter. Storage trouble never reaches the script: the flusher keeps records in memory and
retries, checkpoints are skipped meanwhile, and the run is marked degraded; a florql bug in the
flusher ends the run `failed`, loudly, and the script goes on unrecorded.

Under plain `python train.py` the run ends from a `threading` exit hook, which runs before the
interpreter refuses new thread-pool work, so a checkpoint still being written at exit (the last
epoch's) is finished and kept.

Loop machinery: the first top-level `florql.loop` is the *outer* loop. At each of its iterations
the session records LOOP and RNG; when the first inner loop of the iteration ends it records
LOOP_END, the script variables (STATE) and offers a checkpoint (phase `inner_end`); an iteration
without an inner loop offers one when it ends (`iter_end`). An inner loop left by `break` looks
like one unwound by an exception (the loop's generator is closed either way), so its checkpoint
is snapshotted then but written only when the outer iteration ends normally. Subclasses change
the behaviour at these hooks: `ResumeSession` fast-forwards to a checkpoint,
`florql.replay_session` runs replay tasks.

Run ids are short, sortable and unique:

>>> rid = new_run_id(); rid[0], len(rid)
('r', 20)
"""

from __future__ import annotations

import ast
import atexit
import collections
import contextlib
import itertools
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

from florql import capture, config, declared_args, loopstate, parsed_args, scriptvars, sources
from florql.declared_args import cast_override
from florql.errors import BadInputError, FlorqlError, RecordError
from florql.flusher import Flusher
from florql.schema import LOOP, LOOP_END, RNG, STATE, VALUE
from florql.values import check_name, is_utf8, to_loggable

FLUSH_SECONDS = 0.5
# Every 61st florql.log call is timed, for the overhead line (a sample is cheap). Prime, so a
# script that alternates cheap and costly calls is sampled at every phase of its pattern.
LOG_SAMPLE = 61
_now = time.time
_perf = time.perf_counter

CURRENT: Session | NullSession | None = None
_LOCK = threading.Lock()


def current() -> Session | NullSession:
    """The current session, starting a default one (on `$FLORQL_STORE`) if there is none."""
    global CURRENT
    with _LOCK:
        if CURRENT is None:
            CURRENT = _default_session()
        return CURRENT


def install(session: Session | NullSession | None) -> None:
    """Make `session` current (None: none)."""
    global CURRENT
    CURRENT = session


def reset() -> None:
    """Forget the current session without ending it (tests)."""
    install(None)


def _default_session() -> Session | NullSession:
    if config.disabled():
        return NullSession()
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "<stdin>")
    store = config.store()
    try:
        s = Session(store, script=os.path.abspath(script), argv=list(sys.argv))
        s.start()
    except FlorqlError as e:
        # Plain `python train.py`: florql must not end the training; say why nothing is kept.
        print(f"florql: error: this run is not recorded: {e}", file=sys.stderr)
        return NullSession()
    s.install_exit_hooks()
    return s


def new_run_id() -> str:
    """`r` + UTC time to the millisecond + 4 random hex digits."""
    now = time.time()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    return f"r{stamp[2:]}{secrets.token_hex(2)}"


class NullSession:
    """Records nothing: every call passes through (FLORQL_DISABLE=1); `--arg` still applies."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.overrides = overrides or {}

    def log(self, name: str, value: Any) -> Any:
        return value

    def arg(self, name: str, default: Any) -> Any:
        if name in self.overrides:
            return cast_override(name, self.overrides[name], default)
        return default

    def record_args(self, values: dict[str, Any], strict: bool = True) -> None:
        pass

    def loop(self, name: str, iterable: Any) -> Any:
        return iterable

    def register(self, objects: dict[str, Any]) -> None:
        pass

    def rest_of_iteration_unneeded(self) -> bool:
        return False


class _Loop:
    __slots__ = (
        "name",
        "iteration",
        "value",
        "had_inner",
        "started",
        "total",
        "is_outer",
        "frame",
        "line",
        "inner_frame",
        "inner_line",
    )

    def __init__(self, name: str, total: int | None = None, is_outer: bool = False) -> None:
        self.name = name
        self.is_outer = is_outer
        self.iteration = -1
        self.value: Any = None
        self.had_inner = False
        self.started = 0.0
        self.total = total
        # Where the loop runs (the outer loop, and its first inner loop): the frames whose
        # variables a checkpoint captures and a restore writes back (florql/scriptvars.py).
        self.frame: FrameType | None = None
        self.line = 0
        self.inner_frame: FrameType | None = None
        self.inner_line = 0


class Session:
    """Records one run into a store. `start()` opens the store; `end()` closes the run.

    Args:
        store_path: the store folder (created if missing).
        script: absolute path of the training script.
        argv: the script's sys.argv.
        overrides: `--arg` values by name (strings, or typed values on resume/replay).
        overhead: checkpoint overhead budget as a fraction of wall time.
        command: the command line that started the run.
        fs: the store's file system (`florql_storage.fs`; default the real one).
        declared_args: arg names the script's code declares (`florql.arg("name", ...)` with a
            literal name), to report a misspelled `--arg` when the script starts using args;
            None when unknown.
    """

    muted = False  # True while records are dropped (resume fast-forward, replay)
    resumed = False

    def __init__(
        self,
        store_path: str,
        *,
        script: str,
        argv: list[str],
        overrides: dict[str, Any] | None = None,
        overhead: float | None = None,
        command: str | None = None,
        fs: Any = None,
        declared_args: frozenset[str] | None = None,
    ) -> None:
        self.store_path = os.path.abspath(store_path)
        self.script = script
        self.argv = argv
        self.overrides = dict(overrides or {})
        self.overhead = 0.02 if overhead is None else overhead
        self.command = command or " ".join(sys.argv)
        self.run_id = new_run_id()
        self.args: dict[str, Any] = {}
        self.parsed_args: dict[str, Any] = {}  # argparse namespaces and florql.args(...)
        self.declared_args = declared_args
        self._overrides_checked = False
        # --arg names already reported, or asked for by florql.arg (even when the value did not
        # convert): the end of the run does not call them unused.
        self._overrides_seen: set[str] = set()
        self.objects: dict[str, Any] = {}
        self.started_at = time.time()
        self.cwd = os.getcwd()
        self._t0 = time.perf_counter()
        self._buf: collections.deque = collections.deque()
        self._counter = itertools.count(1)
        self._ctx: tuple = ()
        self._stack: list[_Loop] = []
        self._outer_seen = False
        self._begun = False
        self._ended = False
        self._held: Any = None  # a checkpoint snapshotted at a closed inner loop (`inner_end`)
        self._failure: BaseException | None = None
        # Held while records go to the writer and while a checkpoint is written, so that a
        # failed checkpoint flush never takes queued values with it (flusher invariant 1).
        self._drain_lock = threading.RLock()
        self._fs = fs
        self.flusher = Flusher(self, interval=FLUSH_SECONDS, capacity=config.buffer_records())
        self._abandoned: str | None = None  # why a florql bug stopped the recording
        self._final_stats: dict[str, Any] = {}
        self._names: set[str] = set()  # names already checked (the hot path checks once)
        self.values = 0
        self.fg_seconds = 0.0  # time spent in florql's hooks in the training thread
        self.loop_seconds = 0.0  # inner-loop bookkeeping in the training thread
        self._log_calls = 0
        self._log_sampled = 0.0  # seconds of the timed florql.log calls (every LOG_SAMPLE-th)
        self.inner_iterations = 0
        self._var_plan: scriptvars.VarPlan | None = None
        self.rng_start: dict[str, Any] | None = None
        self._sources: dict[str, str] | None = None
        self._git: str | None = None
        self.store: Any = None
        self.writer: Any = None
        self.checkpointer: Any = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store and start the flusher; RUN_BEGIN is written at the first record.

        Raises:
            BadInputError: a path or argument the run records is not valid UTF-8 text.
            StoreError: the store cannot be opened or created.
        """
        from florql_storage import Store

        self._check_text()
        self.store = Store.open(self.store_path, create=True, fs=self._fs)
        self.writer = self.store.writer()
        self.rng_start = capture.capture_rng(numpy=True)
        # Before the script runs (`florql record`): forking git is cheap while the process is
        # small, and nothing here competes with training later.
        self._sources = sources.collect(self.script)
        self._git = sources.git_commit(os.path.dirname(self.script))
        self.flusher.start()
        from florql.checkpointer import Checkpointer

        self.checkpointer = Checkpointer(self, budget=self.overhead)

    def _begin(self) -> None:
        """Write RUN_BEGIN (deferred so that the args declared before the first record are in).

        Under the drain lock, so that no record of the run reaches the writer before it.
        """
        if self._begun:
            return
        try:
            with self._drain_lock:
                self._begin_locked()
        except Exception as e:  # noqa: BLE001 - never into the script (flusher invariant 2)
            self.flusher.failed(e)

    def _check_text(self) -> None:
        """Refuse paths and arguments that the run's records cannot hold as text."""
        checks = [
            ("the working folder", self.cwd, "run from a folder whose name is UTF-8"),
            ("the script path", self.script, "rename the script or its folder"),
            ("the store path", self.store_path, "choose a store folder whose path is UTF-8"),
        ]
        checks += [
            (f"script argument {i}", a, "pass arguments that are UTF-8 text")
            for i, a in enumerate(self.argv)
            if i
        ]
        checks.append(("the command line", self.command, "pass arguments that are UTF-8 text"))
        for what, text, fix in checks:
            if not is_utf8(text):
                raise BadInputError(
                    f"{what} {text!r} is not valid UTF-8, which florql records as text: {fix}"
                )

    def _begin_locked(self) -> None:
        if not self._begun:
            self.writer.begin_run(self.run_id, self._begin_meta())
            self._begun = True

    def _begin_meta(self) -> dict[str, Any]:
        srcs = self._sources if self._sources is not None else sources.collect(self.script)
        return {
            "run_id": self.run_id,
            "script": self.script,
            "argv": self.argv,
            "args": self.all_args(),
            "arg_overrides": {k: str(v) for k, v in self.overrides.items()},
            "sources": srcs,
            "source_hash": sources.source_hash(srcs),
            "cwd": self.cwd,
            "python": sys.version.split()[0],
            "torch": sources.torch_version(),
            "git": self._git,
            "started_at": self.started_at,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "overhead": self.overhead,
            # RNG states before the script's first line (`florql record`) or at its first
            # florql call: a replay from the start restores them, so unseeded draws repeat.
            "rng": self.rng_start,
            **_distributed(),
        }

    def all_args(self) -> dict[str, Any]:
        """The run's args: argparse's (and `florql.args`) overlaid by `florql.arg`'s."""
        return {**self.parsed_args, **self.args}

    def install_exit_hooks(self) -> None:
        """End the run at interpreter exit; an uncaught exception marks it failed.

        The end runs from a `threading` exit hook: those run before thread pools refuse new
        work ("cannot schedule new futures after interpreter shutdown"), which the checkpoint
        writer needs to finish the last checkpoint. Registered after `concurrent.futures` has
        registered its own, so it runs first (they run in reverse order). `atexit` is the
        fallback (`end` is idempotent).
        """
        previous = sys.excepthook

        def hook(kind: type, value: BaseException, tb: Any) -> None:
            self.note_failure(value)
            previous(kind, value, tb)

        sys.excepthook = hook
        import concurrent.futures.thread  # noqa: F401 - registers its exit hook before ours

        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            with contextlib.suppress(RuntimeError):  # already shutting down
                register(self.end)
        atexit.register(self.end)

    def note_failure(self, exc: BaseException) -> None:
        self._failure = exc

    def end(
        self, status: str | None = None, error: str | None = None, keep: bool = True
    ) -> dict[str, Any]:
        """Finish the run: wait for checkpoints, flush, write RUN_END; return the stats.

        Idempotent, and never raises for storage trouble: a store that still refuses writes
        after `flusher.EXIT_PATIENCE` seconds of retries is said so on stderr (the run then
        reads as crashed, with everything flushed before kept). `keep=False` leaves no trace
        of a run that recorded nothing yet (bad input at the script's first florql call).
        """
        if self._ended:
            return self._final_stats
        self._ended = True
        self.muted = True  # records made after the end (e.g. by loops closed late) are dropped
        if status is None:
            status = "failed" if self._failure is not None else "finished"
        if error is None and self._failure is not None:
            error = "".join(traceback.format_exception_only(self._failure)).strip()
        if self.checkpointer is not None:
            if self._held is not None:  # its iteration never ended: the script failed in it
                self.checkpointer.discard(self._held)
                self._held = None
            self.checkpointer.close()
        self.flusher.stop()
        if self._abandoned is None:
            if not keep and not self._begun and not self._buf and not self.flusher.pending:
                pass  # bad input before anything was recorded: the store stays as it was
            elif self.flusher.finish():
                self._write_end(status, error)
            else:
                print(
                    f"florql: error: the store at {self.store_path} still refuses writes; "
                    f"{len(self.flusher.pending)} records of run {self.run_id} could not be "
                    "saved and the run will read as crashed (everything flushed before is kept)",
                    file=sys.stderr,
                )
        self._final_stats = self.stats()
        self._close_store()
        if CURRENT is self:
            install(None)
        return self._final_stats

    def _end_body(self, status: str, error: str | None) -> dict[str, Any]:
        """RUN_END's body (docs/INTERFACES.md §2)."""
        return {
            "run_id": self.run_id,
            "status": status,
            "error": error,
            "ended_at": time.time(),
            "stats": self.stats(),
            "args": self.all_args(),
            "resumed": self.resumed,
        }

    def _write_end(self, status: str, error: str | None) -> None:
        try:
            self.writer.end_run(self.run_id, status, self._end_body(status, error))
        except Exception as e:  # noqa: BLE001 - the end of a run must not raise into exit
            print(
                f"florql: error: could not write the end of run {self.run_id} ({e}); it will "
                "read as crashed, with everything flushed before kept",
                file=sys.stderr,
            )

    def _close_store(self) -> None:
        for close in (self.writer.close, self.store.close):
            with contextlib.suppress(Exception):  # said already; nothing more to save
                close()

    def abandon(self, reason: str) -> None:
        """Stop recording after a florql bug (flusher invariant 6): the run ends `failed`
        with `reason`; later calls pass their values through. Called by the flusher."""
        if self._abandoned is not None:
            return
        self._abandoned = reason
        self.muted = True
        self._buf.clear()
        if self.checkpointer is not None:
            self.checkpointer.disable(reason)
        with contextlib.suppress(Exception):  # the store may be what failed; said already
            self.writer.end_run(self.run_id, "failed", self._end_body("failed", reason))

    @property
    def degraded_reason(self) -> str | None:
        """Why the run is degraded (storage trouble skipped checkpoints or values), or None."""
        ck = self.checkpointer
        return self.flusher.degraded_reason or (ck.degraded_reason if ck else None)

    def stats(self) -> dict[str, Any]:
        """The run's counts and overhead (RUN_END's `stats`, the end-of-run line).

        `overhead` is everything florql did that the training waited for, over wall time: the
        florql.log calls (estimated from every LOG_SAMPLE-th call, timed), loop bookkeeping,
        checkpoint snapshots, and the background threads' CPU time (checkpoint writer and
        flusher, weighted by the share of a core they take from training); `overhead_parts`
        breaks it down.
        """
        wall = max(time.perf_counter() - self._t0, 1e-9)
        ck = self.checkpointer
        contention = ck.contention if ck else 1.0
        samples = self._log_calls // LOG_SAMPLE
        parts = {
            "log": self._log_sampled / samples * self._log_calls if samples else 0.0,
            "loops": self.fg_seconds + self.loop_seconds,
            "checkpoint_stall": ck.fg_seconds if ck else 0.0,
            "background": ((ck.bg_cpu_seconds if ck else 0.0) + self.flusher.cpu_seconds)
            * contention,
        }
        reason = self.degraded_reason
        return {
            "values": self.values,
            "checkpoints": ck.count if ck else 0,
            "checkpoints_skipped": ck.skipped if ck else 0,
            "raw_bytes": ck.raw_bytes if ck else 0,
            "stored_bytes": ck.stored_bytes if ck else 0,
            "overhead": sum(parts.values()) / wall,
            "overhead_parts": {k: v / wall for k, v in parts.items()},
            "checkpoint_write_seconds": ck.bg_seconds if ck else 0.0,
            "wall_seconds": wall,
            # Replay must keep this (thread count changes float reductions), so it sizes its
            # worker pool by it: cores // torch_threads workers on a CPU.
            "torch_threads": _torch_threads(),
            "degraded": reason is not None,
            "degraded_reason": reason,
            "values_dropped": self.flusher.values_dropped,
            "checkpoints_failed": ck.failed if ck else 0,
        }

    # --- records -----------------------------------------------------------------------------

    def next_seq(self) -> int:
        return next(self._counter)

    def set_seq(self, last: int) -> None:
        """Continue the counter after `last` (resume)."""
        self._counter = itertools.count(last + 1)

    def emit(self, kind: int, body_fn: Any) -> None:
        """Queue a non-VALUE record; `body_fn(seq)` builds its body."""
        if self.muted or self._ended:
            return
        self._buf.append((kind, body_fn(next(self._counter))))

    @property
    def write_lock(self) -> threading.RLock:
        """Held by the checkpoint writer around its flush and write (see `_drain_lock`)."""
        return self._drain_lock

    def drain(self) -> bool:
        """Make every queued record durable (the checkpoint writer calls this before a
        checkpoint). False when the store refused (the records wait for a retry) or recording
        stopped; never raises."""
        return self.flusher.flush()

    # --- API ---------------------------------------------------------------------------------

    def log(self, name: str, value: Any) -> Any:
        calls = self._log_calls = self._log_calls + 1
        if not calls % LOG_SAMPLE:
            return self._timed_log(name, value)
        if type(name) is not str or name not in self._names:
            self._check_name(name)
        t = type(value)
        v = value if t is float or t is bool or value is None else to_loggable(name, value)
        if self.muted:
            return value
        self._buf.append((VALUE, next(self._counter), name, v, self._ctx, _now()))
        return value

    def _timed_log(self, name: str, value: Any) -> Any:
        """`log`, timed: the sample the overhead line estimates every call's cost from."""
        t0 = _perf()
        try:
            if type(name) is not str or name not in self._names:
                self._check_name(name)
            v = to_loggable(name, value)
            if not self.muted:
                self._buf.append((VALUE, next(self._counter), name, v, self._ctx, _now()))
            return value
        finally:
            self._log_sampled += _perf() - t0

    def _check_name(self, name: Any) -> None:
        check_name("florql.log", name)
        self._names.add(name)

    def arg(self, name: str, default: Any) -> Any:
        check_name("florql.arg", name)
        if not self._overrides_checked:
            self._overrides_checked = True
            self.report_unknown_overrides()
        if name in self.args:
            return self.args[name]
        self._overrides_seen.add(name)
        value = (
            cast_override(name, self.overrides[name], default)
            if name in self.overrides
            else default
        )
        self.args[name] = to_loggable(name, value, call="florql.arg")
        return value

    def record_args(self, values: dict[str, Any], strict: bool = True) -> None:
        """Record settings parsed elsewhere (argparse, `florql.args`) as the run's args.

        Values florql.log could not store (a Path, an open file) are recorded as their str().
        A name that cannot be a column is a TypeError/BadValueError (`strict`, `florql.args`)
        or skipped (argparse's own parse, which must never fail because of florql).
        """
        for name, value in values.items():
            try:
                check_name("florql.args", name)
            except (TypeError, ValueError):
                if strict:
                    raise
                continue
            self.parsed_args[name] = parsed_args.storable(value)
        if not self._overrides_checked:
            self._overrides_checked = True
            self.report_unknown_overrides()

    def report_unknown_overrides(self) -> None:
        """Warn, when the script starts using args, about `--arg` names its code never
        declares (`declared_args`, found by reading the code), with the closest name."""
        if self.declared_args is None:
            return
        known = set(self.declared_args)
        for name in sorted(set(self.overrides) - known):
            message = declared_args.unknown_override(name, known, self.parsed_args)
            print(f"florql: warning: {message}", file=sys.stderr)
            self._overrides_seen.add(name)

    def unconsumed_overrides(self) -> list[str]:
        """`--arg` names no florql.arg call took and no warning named already (on a resume,
        which passes all recorded args back, names the script's argparse parsed are left out)."""
        left = set(self.overrides) - set(self.args) - self._overrides_seen
        return sorted(left - set(self.parsed_args) if self.resumed else left)

    def register(self, objects: dict[str, Any]) -> None:
        for name, obj in objects.items():
            capture.check_registrable(name, obj)
        self.objects.update(objects)

    def loop(self, name: str, iterable: Any) -> Any:
        check_name("florql.loop", name)
        if not self._stack and not self._outer_seen:
            self._outer_seen = True
            return self._outer(name, iterable)
        return self._nested(name, iterable)

    # --- loops -------------------------------------------------------------------------------

    def _outer(self, name: str, iterable: Any) -> Any:
        lp = _Loop(name, _length(iterable), is_outer=True)
        lp.frame = sys._getframe(1)
        lp.line = lp.frame.f_lineno
        self._stack.append(lp)
        i = -1
        try:
            for i, item in enumerate(iterable):
                if not self.outer_wants(i, sys._getframe(1)):
                    continue
                lp.iteration, lp.value = i, (item if type(item) in (int, str) else i)
                lp.had_inner = False
                self._ctx = ((name, i, lp.value),)
                self.outer_begin(lp)
                yield item
                self.outer_end(lp, sys._getframe(1))
        finally:
            self._stack.pop()
            self._ctx = ()
            lp.frame = lp.inner_frame = None  # no reference cycle through the script's frames
            self.outer_done()
            self.emit(LOOP_END, lambda s: [self.run_id, s, name, [], i + 1, time.time()])

    def _nested(self, name: str, iterable: Any) -> Any:
        outer = self._stack[0] if len(self._stack) == 1 and self._stack[0].is_outer else None
        first = outer is not None and not outer.had_inner
        if outer is not None and first:
            outer.had_inner = True
            outer.inner_frame = sys._getframe(1)
            outer.inner_line = outer.inner_frame.f_lineno
            if self.inner_start(outer, sys._getframe(1)):
                return  # skipped: the checkpoint restored the state this loop leaves behind
        parent = self._ctx
        lp = _Loop(name)
        self._stack.append(lp)
        i = -1
        closed = False
        try:
            for i, item in enumerate(iterable):
                t0 = _perf()
                value = item if type(item) in (int, str) else i
                self._ctx = ctx = (*parent, (name, i, value))
                self.emit(LOOP, lambda s, ctx=ctx: [self.run_id, s, name, ctx, time.time()])
                if first:
                    self.inner_iterations += 1
                self.loop_seconds += _perf() - t0
                yield item
        except GeneratorExit:
            # `break`, or an exception unwinding the script: the two cannot be told apart here,
            # so the checkpoint is only held, and written when the iteration ends normally.
            closed = True
            raise
        finally:
            self._ctx = parent
            self._stack.pop()
            self.emit(LOOP_END, lambda s: [self.run_id, s, name, parent, i + 1, time.time()])
            if outer is not None and first and not self._ended:
                self.inner_end(outer, sys._getframe(1), closed)

    # --- hooks (record mode) -------------------------------------------------------------------

    def outer_wants(self, iteration: int, frame: FrameType) -> bool:
        """Whether the outer loop runs `iteration` (resume and replay skip some)."""
        return True

    def outer_begin(self, lp: _Loop) -> None:
        t = time.perf_counter()
        if not self._begun:
            self._begin()  # the run exists (and can be resumed) from its first iteration on
        if self.checkpointer is not None:
            self.checkpointer.iteration_started(t)
        ctx = self._ctx
        self.emit(LOOP, lambda s: [self.run_id, s, lp.name, ctx, time.time()])
        if not self.muted:
            rng = capture.capture_rng()
            self.emit(RNG, lambda s: {"run_id": self.run_id, "seq": s, "ctx": ctx, "states": rng})
        self.fg_seconds += time.perf_counter() - t

    def inner_start(self, outer: _Loop, frame: FrameType) -> bool:
        """Called when the first inner loop of an outer iteration starts; True skips it."""
        return False

    def inner_end(self, outer: _Loop, frame: FrameType, closed: bool = False) -> None:
        """The first inner loop of an outer iteration ended (`closed`: by `break`, or by an
        exception on its way out of the script, which only the iteration's end tells apart)."""
        if self.muted:
            return
        t = time.perf_counter()
        ctx = self._ctx
        found = self._loop_values(outer, frame)
        loggable = {
            k: to_loggable(k, v)
            for scope in found.scopes.values()
            for k, v in scope.items()
            if _is_plain(v)
        }
        if loggable and not closed:
            self.emit(
                STATE, lambda s: {"run_id": self.run_id, "seq": s, "ctx": ctx, "vars": loggable}
            )
        self.fg_seconds += time.perf_counter() - t
        self._offer_checkpoint(outer, "inner_end", found, hold=closed)

    def outer_end(self, lp: _Loop, frame: FrameType) -> None:
        held, self._held = self._held, None
        if held is not None and self.checkpointer is not None:
            self.checkpointer.commit(held)  # the `break` was a break: the iteration went on
        if not lp.had_inner and not self.muted and not self._ended:
            self._offer_checkpoint(lp, "iter_end", self._loop_values(lp, frame))

    def outer_done(self) -> None:
        pass

    def rest_of_iteration_unneeded(self) -> bool:
        """Recording runs every statement; a replay may answer True (florql/replay_session)."""
        return False

    def _loop_values(self, outer: _Loop, frame: FrameType) -> loopstate.LoopValues:
        """The script variables a checkpoint taken now must hold, by checkpoint-meta key:
        `vars` (the frame running the inner loop, or the outer loop's when there is none),
        `outer_vars` (the outer loop's frame when that is another one), `global_vars`."""
        plan = self._plan_vars(outer, frame)
        out: dict[str, dict[str, Any]] = {}
        outer_frame = outer.frame if outer.frame is not None else frame
        same = outer_frame is frame
        names = plan.outer + plan.receivers + plan.extra_outer
        inner = plan.inner + plan.extra_inner
        out["vars"] = scriptvars.read(frame, (*inner, *names) if same else inner)
        if not same:
            out["outer_vars"] = scriptvars.read(outer_frame, names)
        if plan.globals:
            out["global_vars"] = {
                n: outer_frame.f_globals[n] for n in plan.globals if n in outer_frame.f_globals
            }
        return loopstate.LoopValues(
            out, frozenset(plan.receivers), frozenset(plan.extra_outer + plan.extra_inner)
        )

    def _plan_vars(self, outer: _Loop, frame: FrameType) -> scriptvars.VarPlan:
        """The run's VarPlan, analysed at the first checkpoint offer (then cached)."""
        if self._var_plan is None:
            self._var_plan = scriptvars.VarPlan()
            outer_frame = outer.frame if outer.frame is not None else frame
            tree = _parsed(outer_frame.f_code.co_filename)
            inner = outer.inner_frame
            if tree is not None:
                self._var_plan = scriptvars.plan(
                    tree,
                    outer.line,
                    _parsed(inner.f_code.co_filename) if inner is not None else None,
                    outer.inner_line if inner is not None else None,
                    same_frame=inner is None or inner is outer_frame,
                    outer_is_module=scriptvars.is_module_frame(outer_frame),
                )
        return self._var_plan

    def _offer_checkpoint(
        self,
        outer: _Loop,
        phase: str,
        found_vars: loopstate.LoopValues,
        hold: bool = False,
    ) -> None:
        """Checkpoint now if the policy agrees; with `hold`, snapshot now but write only at
        the end of the outer iteration (`outer_end`), dropping it if the script fails first."""
        if self.checkpointer is None or not self.objects:
            return
        if not self._begun:
            self._begin()
        is_last = outer.total is not None and outer.iteration == outer.total - 1
        job = self.checkpointer.hold(
            seq=_peek(self),
            ctx=((outer.name, outer.iteration, outer.value),),
            phase=phase,
            found_vars=found_vars,
            iteration=outer.iteration,
            is_last=is_last,
        )
        if job is None:
            return
        if hold:
            self._held = job
        else:
            self.checkpointer.commit(job)

    # --- restore (resume and replay) -------------------------------------------------------------

    def restore(self, ckpt: Any, frame: FrameType | None) -> dict[str, Any]:
        """Load checkpoint `ckpt` into the registered objects, RNG and the script's variables."""
        meta, blobs = self.store.load_checkpoint(ckpt)
        missing = capture.restore_objects(self.objects, meta.get("objects", {}), blobs)
        if missing:
            raise RecordError(
                f"checkpoint {ckpt.ckpt_id} has no state for {', '.join(missing)}: the script "
                "registers objects the recorded run did not; restore needs the same "
                "florql.checkpointing(...) names"
            )
        loopstate.restore_grads(self.objects, meta.get("grads") or {}, blobs)
        capture.restore_rng(meta["rng"])
        outer = self._stack[0] if self._stack and self._stack[0].is_outer else None
        outer_frame = outer.frame if outer is not None else None
        frame = frame if frame is not None else outer_frame
        for key, target in (
            ("global_vars", outer_frame),
            ("outer_vars", outer_frame),
            ("vars", frame),
        ):
            skels = meta.get(key)
            if not skels or target is None:
                continue
            live = target.f_globals if key == "global_vars" else scriptvars.scope_of(target)
            rebind = loopstate.decode_scope(skels, blobs, live)
            if key == "global_vars":
                target.f_globals.update(rebind)
            else:
                scriptvars.write(target, rebind)
        return meta


def _peek(session: Session) -> int:
    """The last seq assigned (the checkpoint's seq): records up to it precede the snapshot."""
    nxt = next(session._counter)
    session._counter = itertools.count(nxt)
    return nxt - 1


def _is_plain(v: Any) -> bool:
    from florql.values import is_loggable

    mod = type(v).__module__ or ""
    return not mod.startswith("torch") and is_loggable(v)


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def _parsed(path: str) -> ast.Module | None:
    """The syntax tree of a source file (None when it cannot be read or parsed)."""
    try:
        with open(path, encoding="utf-8") as f:
            return ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None


def _torch_threads() -> int:
    """torch's intra-op thread count if the script imported torch, else 1."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


def _distributed() -> dict[str, int]:
    """Rank and world size of a distributed job (torchrun sets RANK and WORLD_SIZE)."""
    out = {}
    for key, env, default in (("rank", "RANK", 0), ("world_size", "WORLD_SIZE", 1)):
        try:
            out[key] = int(os.environ.get(env, default))
        except ValueError:
            out[key] = default
    return out
