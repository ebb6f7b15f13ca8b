"""The recording session: turns API calls into logical records (docs/INTERFACES.md §2).

One session per process is current (`CURRENT`). `florql record` installs one before running the
script; otherwise the first API call starts one on the default store and ends it at interpreter
exit (status `failed` when an exception reached `sys.excepthook`, else `finished`).

Hot path: `log` validates the value, then appends one tuple to a deque; a flusher thread drains
the deque every `FLUSH_SECONDS`, builds record bodies and hands them to the LogWriter in one
group commit. Every record of the run takes the next value of the run's `seq` counter.

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

from florql import capture, loopstate, scriptvars, sources
from florql.errors import BadInputError, RecordError
from florql.values import SCALARS, to_loggable

# Record kinds (florql_storage.kinds; repeated so importing florql needs no storage import).
RUN_BEGIN, RUN_END, VALUE, LOOP, LOOP_END, RNG, STATE, RUN_RESUME = 1, 2, 3, 4, 5, 6, 7, 8

FLUSH_SECONDS = 0.5
_now = time.time
DEFAULT_STORE = ".florql"

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
    if os.environ.get("FLORQL_DISABLE") == "1":
        return NullSession()
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "<stdin>")
    store = os.environ.get("FLORQL_STORE") or DEFAULT_STORE
    s = Session(store, script=os.path.abspath(script), argv=list(sys.argv))
    s.start()
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


def cast_override(name: str, text: Any, default: Any) -> Any:
    """Cast a `--arg` string to the type of `default`.

    >>> cast_override("lr", "0.5", 1.0), cast_override("n", "3", 1), cast_override("f", "true", False)
    (0.5, 3, True)
    """
    if not isinstance(text, str) or isinstance(default, str) or default is None:
        return text
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise BadInputError(
            f"--arg {name}={text}: cannot convert to {type(default).__name__} "
            f"(the default is {default!r})"
        ) from None
    return text


class Session:
    """Records one run into a store. `start()` opens the store; `end()` closes the run.

    Args:
        store_path: the store folder (created if missing).
        script: absolute path of the training script.
        argv: the script's sys.argv.
        overrides: `--arg` values by name (strings, or typed values on resume/replay).
        overhead: checkpoint overhead budget as a fraction of wall time.
        command: the command line that started the run.
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
    ) -> None:
        self.store_path = os.path.abspath(store_path)
        self.script = script
        self.argv = argv
        self.overrides = dict(overrides or {})
        self.overhead = 0.02 if overhead is None else overhead
        self.command = command or " ".join(sys.argv)
        self.run_id = new_run_id()
        self.args: dict[str, Any] = {}
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
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.values = 0
        self.fg_seconds = 0.0  # time spent in florql's hooks in the training thread
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
        """Open the store and start the flusher; RUN_BEGIN is written at the first record."""
        from florql_storage import Store

        self.store = Store.open(self.store_path, create=True)
        self.writer = self.store.writer()
        self.rng_start = capture.capture_rng(numpy=True)
        # Before the script runs (`florql record`): forking git is cheap while the process is
        # small, and nothing here competes with training later.
        self._sources = sources.collect(self.script)
        self._git = sources.git_commit(os.path.dirname(self.script))
        self._flusher = threading.Thread(
            target=self._flush_loop, name="florql-flusher", daemon=True
        )
        self._flusher.start()
        from florql.checkpointer import Checkpointer

        self.checkpointer = Checkpointer(self, budget=self.overhead)

    def _begin(self) -> None:
        """Write RUN_BEGIN (deferred so that the args declared before the first record are in).

        Under the drain lock, so that no record of the run reaches the writer before it.
        """
        if self._begun:
            return
        with self._drain_lock:
            self._begin_locked()

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
            "args": dict(self.args),
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
        }

    def install_exit_hooks(self) -> None:
        """End the run at interpreter exit; an uncaught exception marks it failed."""
        previous = sys.excepthook

        def hook(kind: type, value: BaseException, tb: Any) -> None:
            self.note_failure(value)
            previous(kind, value, tb)

        sys.excepthook = hook
        atexit.register(self.end)

    def note_failure(self, exc: BaseException) -> None:
        self._failure = exc

    def end(self, status: str | None = None, error: str | None = None) -> dict[str, Any]:
        """Finish the run: wait for checkpoints, flush, write RUN_END. Idempotent."""
        if self._ended:
            return {}
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
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self._begin()
        self.drain(flush=False)
        stats = self.stats()
        body = {
            "run_id": self.run_id,
            "status": status,
            "error": error,
            "ended_at": time.time(),
            "stats": stats,
            "args": dict(self.args),
            "resumed": self.resumed,
        }
        self.writer.end_run(self.run_id, status, body)
        self.writer.close()
        self.store.close()
        if CURRENT is self:
            install(None)
        return stats

    def stats(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        ck = self.checkpointer
        fg = self.fg_seconds + (ck.fg_seconds if ck else 0.0)
        bg = ck.bg_cpu_seconds * ck.contention if ck else 0.0
        return {
            "values": self.values,
            "checkpoints": ck.count if ck else 0,
            "checkpoints_skipped": ck.skipped if ck else 0,
            "raw_bytes": ck.raw_bytes if ck else 0,
            "stored_bytes": ck.stored_bytes if ck else 0,
            "overhead": (fg + bg) / wall,
            "checkpoint_write_seconds": ck.bg_seconds if ck else 0.0,
            "wall_seconds": wall,
            # Replay must keep this (thread count changes float reductions), so it sizes its
            # worker pool by it: cores // torch_threads workers on a CPU.
            "torch_threads": _torch_threads(),
        }

    def unconsumed_overrides(self) -> list[str]:
        return sorted(set(self.overrides) - set(self.args))

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

    def drain(self, flush: bool = True) -> None:
        """Hand every queued record to the writer (in seq order); `flush`: make them durable."""
        with self._drain_lock:
            buf = self._buf
            n = len(buf)
            if n:
                self._begin_locked()
                rid = self.run_id
                entries = []
                for _ in range(n):
                    item = buf.popleft()
                    if item[0] == VALUE:
                        _, seq, name, value, ctx, t = item
                        entries.append((VALUE, [rid, seq, name, value, ctx, t, ""]))
                        self.values += 1
                    else:
                        entries.append(item)
                self.writer.append_many(entries)
            if flush and (n or self._begun):
                self.writer.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            if self._buf:
                try:
                    self.drain()
                except Exception as e:  # a failing store must not kill the training silently
                    print(f"florql: warning: background flush failed: {e}", file=sys.stderr)
                    return

    # --- API ---------------------------------------------------------------------------------

    def log(self, name: str, value: Any) -> Any:
        v = value if type(value) in SCALARS else to_loggable(name, value)
        if self.muted:
            return value
        self._buf.append((VALUE, next(self._counter), name, v, self._ctx, _now()))
        return value

    def arg(self, name: str, default: Any) -> Any:
        if name in self.args:
            return self.args[name]
        value = (
            cast_override(name, self.overrides[name], default)
            if name in self.overrides
            else default
        )
        self.args[name] = to_loggable(f"arg {name}", value)
        return value

    def register(self, objects: dict[str, Any]) -> None:
        for name, obj in objects.items():
            capture.check_registrable(name, obj)
        self.objects.update(objects)

    def loop(self, name: str, iterable: Any) -> Any:
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
                value = item if type(item) in (int, str) else i
                self._ctx = ctx = (*parent, (name, i, value))
                self.emit(LOOP, lambda s, ctx=ctx: [self.run_id, s, name, ctx, time.time()])
                if first:
                    self.inner_iterations += 1
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
