"""Hindsight replay end to end: find new statements, plan, run workers, check fidelity, keep results.

`plan(store_path, names, selection)` answers "what would it take" without running anything
(`florql explain`); `ensure(...)` does the work and returns a `Report` (INTERFACES §4). Both
take the same steps first (`request.prepare`):

1. For each run (its RUN_BEGIN has `script`, `cwd`, `sources`): read the current version of each
   recorded source file (relative to the script's folder, or to SCRIPT's folder when the caller
   names the current script) and splice the new statements that log wanted names into the
   recorded code (`splicer.py`). Names no current code logs end up in `unresolved`.
2. Summarise each run (`history.py`), drop the iterations earlier replays covered, and plan
   (`planner.py`) under the caller's selection.

`ensure` then writes the spliced sources to a private temporary folder (the user's checkout is
never touched), appends REPLAY_BEGIN per run (names, iterations, code hash), runs the tasks on
`executor.py`'s pool, and appends REPLAY_END with the fidelity of the recomputed values. Values
are written by the workers, one atomic frame per iteration, so a crash leaves whole iterations;
a later request counts those as covered and does not replay them again.

The progress bar draws on stderr when it is a terminal (`FLORQL_PROGRESS=1` forces it, `=0`
hides it). Fidelity is exact unless `tolerance` (or `FLORQL_REPLAY_TOLERANCE`) says otherwise.

Warnings (missing checkpoints, diverged fidelity, edits that were not replayed) are returned in
`Report.warnings` and printed on stderr as `florql: warning: ...` lines; callers need not print
them again.
"""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from florql import config, schema
from florql.errors import ReplayError
from florql.replay import code_diff, executor, history, planner, trust
from florql.replay.lease import Leases, plan_under_leases
from florql.replay.messages import ReplayTask, TaskResult
from florql.replay.progress import Progress
from florql.replay.request import (
    HindsightPlan,
    RunJob,
    chosen_runs,
    current_sources,
    prepare,
    script_rel,
    two_passes,
)
from florql.replay.workdir import Workdir

if TYPE_CHECKING:
    from florql_storage import Store

__all__ = ["HindsightPlan", "Report", "current_sources", "discover", "ensure", "plan", "prepare"]


@dataclass
class Report:
    """What `ensure` did (INTERFACES §4)."""

    unresolved: set[str] = field(default_factory=set)
    replayed_values: int = 0
    iterations: int = 0
    inner_iterations: int = 0
    runs: list[str] = field(default_factory=list)
    fidelity: dict[str, Any] = field(
        default_factory=lambda: {"checked": 0, "matched": 0, "first_mismatch": None}
    )
    diverged: bool = False
    warnings: list[str] = field(default_factory=list)
    other_edits: list[str] = field(default_factory=list)
    tasks: int = 0
    executed: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    conflicts: int = 0  # recomputed values that differ from values stored before
    verified: Report | None = None  # the check `verify=` asked for

    @property
    def replayed(self) -> int:
        """Alias of `replayed_values` (the name INTERFACES §4 uses)."""
        return self.replayed_values

    def summary(self) -> str:
        """One line for a terminal."""
        if not self.tasks:
            return "nothing to replay: every selected value is already stored"
        fid = self.fidelity
        check = f"; fidelity {fid['matched']}/{fid['checked']} recomputed values matched"
        return (
            f"replayed {self.replayed_values} values over {self.iterations} iterations of "
            f"{len(self.runs)} run(s) in {self.seconds:.1f}s with {self.tasks} task(s){check}"
        )


def plan(
    store_path: str,
    names: Iterable[str],
    selection: Any,
    workers: int | None = None,
    *,
    script: str | None = None,
    runs: Sequence[str] | None = None,
    optional: Iterable[str] = (),
) -> HindsightPlan:
    """Plan the replay of `names` under `selection`, running nothing (INTERFACES §4)."""
    from florql_storage import Store

    store = Store.open(os.path.abspath(store_path), create=False)
    try:
        hp, _later = two_passes(
            store, names, selection, workers, script=script, runs=runs, optional=optional
        )
        return hp
    finally:
        store.close()


def discover(
    store_path: str, *, script: str | None = None, runs: Sequence[str] | None = None
) -> set[str]:
    """Every name the current code of some chosen run logs and its recorded code does not."""
    from florql_storage import Store

    from florql.replay.splicer import new_names

    store = Store.open(os.path.abspath(store_path), create=False)
    try:
        infos = store.runs()
        found: set[str] = set()
        for rid in chosen_runs(infos, runs):
            meta = infos[rid].meta or {}
            recorded = meta.get("sources") or {}
            if recorded:
                found |= new_names(recorded, current_sources(meta, script))
        return found
    finally:
        store.close()


def ensure(
    store_path: str,
    names: Iterable[str],
    selection: Any,
    workers: int | None = None,
    progress: bool = True,
    *,
    script: str | None = None,
    runs: Sequence[str] | None = None,
    tolerance: float | None = None,
    worker_command: Sequence[str] | None = None,
    optional: Iterable[str] = (),
    verify: int = 0,
) -> Report:
    """Replay what is needed so that `names` are stored for every row `selection` admits.

    Args:
        store_path: the store folder.
        names: variables to produce (the SQL layer passes those no run logged).
        selection: has `admits(run_id, {loop: value}) -> bool` (INTERFACES §4).
        workers: worker processes (default: CPU cores, or GPUs when CUDA is present).
        progress: draw a progress bar on stderr when it is a terminal.
        script: the current version of the script (default: each run's recorded path).
        runs: only these run ids.
        tolerance: relative and absolute tolerance of the fidelity check (default
            `$FLORQL_REPLAY_TOLERANCE`, else 0: exact).
        optional: names wanted only from runs whose current code can log them (others logged
            them): a statement for them that cannot be placed in a run is a warning.
        verify: afterwards, re-execute this many selected iterations per run in full (from an
            earlier checkpoint) and compare every recorded and stored value (`verified`).
    Returns:
        A `Report`; names no current code logs are in `unresolved` (not an error here).
    Raises:
        ReplayError: a new statement cannot be placed, or a worker failed.
    """
    from florql_storage import Store

    t0 = time.monotonic()
    if tolerance is None:
        tolerance = config.replay_tolerance()
    store_path = os.path.abspath(store_path)
    store = Store.open(store_path, create=False)
    leases = Leases(store.fs, store.root)  # held until REPLAY_END is written (lease.py)
    try:
        hp, later = plan_under_leases(
            store,
            leases,
            lambda: two_passes(
                store, names, selection, workers, script=script, runs=runs, optional=optional
            ),
            _leased_pairs,
        )
        report = Report(unresolved=hp.unresolved, warnings=list(hp.warnings))
        report.other_edits = hp.other_edits
        if hp.plan.tasks:
            if report.other_edits:  # said before anything runs, not with the results
                print(f"florql: warning: {_other_edits_warning(hp)}", file=sys.stderr)
            _announce_if_foreign(store_path)
            _execute(store, store_path, hp, report, progress, tolerance, worker_command)
    finally:
        leases.release()
        store.close()
    for w in report.warnings:
        print(f"florql: warning: {w}", file=sys.stderr)
    if later:  # names after the outer loop, now that the names inside it are stored
        rest = ensure(
            store_path,
            later,
            selection,
            workers,
            progress,
            script=script,
            runs=runs,
            tolerance=tolerance,
            worker_command=worker_command,
            optional=optional,
        )
        report = _merged(report, rest)
    if verify:
        kw = {"script": script, "runs": runs, "optional": optional}
        v = _verify(store_path, names, selection, workers, verify, tolerance, kw, worker_command)
        report.verified = v
        report.warnings += v.warnings
        report.diverged = report.diverged or v.diverged or v.conflicts > 0
    report.seconds = time.monotonic() - t0
    return report


def _verify(
    store_path: str,
    names: Iterable[str],
    selection: Any,
    workers: int | None,
    n: int,
    tolerance: float,
    kw: dict[str, Any],
    worker_command: Sequence[str] | None,
) -> Report:
    """Re-execute `n` selected iterations per run in full and compare: the values the run
    recorded (fidelity) and those replay stored (a difference is a warning; nothing is
    written, every value there is stored already)."""
    from florql_storage import Store

    store = Store.open(store_path, create=False)
    report = Report()
    try:
        hp = prepare(store, names, selection, workers, verify=n, **kw)
        if hp.plan.tasks:
            _execute(store, store_path, hp, report, False, tolerance, worker_command)
    finally:
        store.close()
    fid = report.fidelity
    bad = report.diverged or report.conflicts > 0
    report.warnings.insert(
        0,
        f"verified by re-executing {sum(map(len, report.executed.values()))} iteration(s) "
        "in full: "
        f"{fid['matched']} of {fid['checked']} recorded values matched, "
        + (
            f"{report.conflicts} stored value(s) differ"
            if report.conflicts
            else "every stored value was reproduced"
        ),
    )
    for w in report.warnings:
        print(f"florql: {'warning: ' if bad else ''}{w}", file=sys.stderr)
    return report


def _merged(a: Report, b: Report) -> Report:
    """Two passes of one request as one report."""
    fid = {
        "checked": a.fidelity["checked"] + b.fidelity["checked"],
        "matched": a.fidelity["matched"] + b.fidelity["matched"],
        "first_mismatch": a.fidelity["first_mismatch"] or b.fidelity["first_mismatch"],
    }
    executed = dict(a.executed)
    for rid, its in b.executed.items():
        executed[rid] = sorted(set(executed.get(rid, [])) | set(its))
    return Report(
        unresolved=a.unresolved | b.unresolved,  # the passes asked for different names
        replayed_values=a.replayed_values + b.replayed_values,
        iterations=a.iterations + b.iterations,
        inner_iterations=a.inner_iterations + b.inner_iterations,
        runs=list(dict.fromkeys(a.runs + b.runs)),
        fidelity=fid,
        diverged=a.diverged or b.diverged,
        warnings=a.warnings + [w for w in b.warnings if w not in a.warnings],
        other_edits=list(dict.fromkeys(a.other_edits + b.other_edits)),
        tasks=a.tasks + b.tasks,
        executed=executed,
    )


def _execute(
    store: Store,
    store_path: str,
    hp: HindsightPlan,
    report: Report,
    progress: bool,
    tolerance: float,
    worker_command: Sequence[str] | None,
) -> None:
    with Workdir() as wd:  # removed on any exit but a failed replay's (kept to read)
        failures = _run_in(wd.path, store, store_path, hp, report, progress, tolerance,
                           worker_command)  # fmt: skip
        if failures:
            wd.keep()
            o = failures[0]
            raise ReplayError(
                f"replay of run {o.task['run_id']} failed: {o.why()} "
                f"(worker log and spliced code kept in {wd.path})"
            )


def _run_in(
    workdir: str,
    store: Store,
    store_path: str,
    hp: HindsightPlan,
    report: Report,
    progress: bool,
    tolerance: float,
    worker_command: Sequence[str] | None,
) -> list[executor.TaskOutcome]:
    writer = store.writer()
    tasks: list[dict[str, Any]] = []
    replay_ids: dict[str, str] = {}
    try:
        for rp in hp.plan.runs:
            job = hp.jobs[rp.run_id]
            rid = replay_ids[rp.run_id] = _replay_id()
            script_path = _write_sources(workdir, rp.run_id, job)
            produces = sorted({i for t in rp.tasks for i in t.produces})
            writer.append(
                schema.REPLAY_BEGIN,
                {
                    "replay_id": rid,
                    "run_id": rp.run_id,
                    "names": sorted(job.names),
                    "iterations": produces,
                    "code_hash": job.splice.code_hash,
                    "started_at": time.time(),
                },
            )
            for t in rp.tasks:
                tasks.append(_task_json(store_path, rid, job, t, script_path, tolerance))
        start_lsn = writer.flush()
        order = sorted(range(len(tasks)), key=lambda i: -hp.plan.tasks[i].cost)
        total = sum(len(t.produces) for t in hp.plan.tasks)
        bar = Progress(total, hp.plan.estimate_seconds(), enabled=_progress_wanted(progress))
        counter = _LiveCount(store, set(replay_ids.values())) if bar.enabled else None

        def poll(done: list[executor.TaskOutcome]) -> None:
            if counter is not None:
                bar.update(counter.count())

        outcomes = executor.run_tasks(
            [tasks[i] for i in order],
            hp.plan.workers,
            workdir,
            command=worker_command,
            on_poll=poll,
        )
        bar.update(total if all(o.ok for o in outcomes) else bar.done, force=True)
        bar.close()
        failures = _finish(writer, hp, replay_ids, outcomes, report, _StoredSince(store, start_lsn))
    finally:
        writer.close()
    return failures


def _finish(
    writer: Any,
    hp: HindsightPlan,
    replay_ids: dict[str, str],
    outcomes: list[executor.TaskOutcome],
    report: Report,
    stored_since: _StoredSince,
) -> list[executor.TaskOutcome]:
    failures = []
    for rp in hp.plan.runs:
        rid = replay_ids[rp.run_id]
        mine = [o for o in outcomes if o.task["replay_id"] == rid]
        fid: dict[str, Any] = {"checked": 0, "matched": 0, "first_mismatch": None}
        stored: set[int] = set()
        executed: set[int] = set()
        for o in mine:
            res = TaskResult.from_json(o.result)
            f = res.fidelity
            fid["checked"] += int(f["checked"] or 0)
            fid["matched"] += int(f["matched"] or 0)
            if fid["first_mismatch"] is None and f["first_mismatch"]:
                fid["first_mismatch"] = f["first_mismatch"]
            ran = res.executed
            producing = {s["iteration"] for s in o.task["steps"] if s["action"] != "silent_tail"}
            stored |= producing & set(ran)
            if o.ok and o.task.get("run_to_end"):
                stored.add(history.AFTER_LOOP)
            executed |= {s["iteration"] for s in o.task["steps"] if s["action"] == "execute"} & set(
                ran
            )
            report.replayed_values += res.values
            report.conflicts += res.conflicts
            report.inner_iterations += res.inner_iterations
            # parallel workers may each see the same thing (a file changed under all of them)
            report.warnings += [w for w in res.warnings if w not in report.warnings]
            if not o.ok:
                failures.append(o)
        status = "finished" if all(o.ok for o in mine) else "failed"
        if status == "failed":
            # A killed worker leaves no result: read what it stored (whole iterations: each is
            # one atomic frame), so a retry neither repeats nor misses any.
            stored = stored_since.iterations(rid)
        writer.append(
            schema.REPLAY_END,
            {
                "replay_id": rid,
                "run_id": rp.run_id,
                "status": status,
                "fidelity": fid,
                "ended_at": time.time(),
                "iterations": sorted(stored),
            },
        )
        report.runs.append(rp.run_id)
        report.iterations += len(stored)
        report.tasks += len(mine)
        report.executed[rp.run_id] = sorted(executed)
        for key in ("checked", "matched"):
            report.fidelity[key] += fid[key]
        if report.fidelity["first_mismatch"] is None:
            report.fidelity["first_mismatch"] = fid["first_mismatch"]
        if fid["matched"] < fid["checked"]:
            report.diverged = True
            report.warnings.append(_divergence(hp.jobs[rp.run_id], fid))
    writer.flush()
    return failures


def _divergence(job: RunJob, fid: dict[str, Any]) -> str:
    m = fid["first_mismatch"] or {}
    where = ", ".join(f"{c[0]}={c[2] if len(c) > 2 else c[1]}" for c in m.get("ctx", []))
    return (
        f"replay of run {job.history.run_id} diverged from the recording: {fid['matched']} of "
        f"{fid['checked']} recomputed values matched; first mismatch: {m.get('name')} at "
        f"{where or 'top level'} recorded {m.get('recorded')!r}, replayed {m.get('replayed')!r}. "
        f"Replayed values of {', '.join(sorted(job.names))} are stored marked as diverged. "
        f"Most likely: {'; or '.join(likely_causes(job.history))}"
    )


def likely_causes(h: history.RunHistory) -> list[str]:
    """What most likely makes a replay of run `h` differ from its recording, most specific
    first (the versions it ran with, state florql could not capture, then the usual
    suspects)."""
    causes = []
    meta = h.meta or {}
    now = {"python": sys.version.split()[0], "torch": _installed("torch")}
    for lib, version in now.items():
        if meta.get(lib) and version and str(meta[lib]).split("+")[0] != version.split("+")[0]:
            causes.append(f"{lib} {version} here, {meta[lib]} when recorded")
    if h.uncaptured:
        listed = ", ".join(f"{n} ({t})" for n, t in sorted(h.uncaptured.items()))
        causes.append(f"state no checkpoint holds: {listed}")
    if not meta.get("rng"):
        causes.append("randomness before the loop (this run was recorded without its start RNG)")
    causes.append(
        "randomness florql does not restore (a generator made inside a function, data loader "
        "worker processes, GPU kernels)"
    )
    causes.append("an input file that changed since the recording")
    return causes


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _task_json(
    store_path: str, replay_id: str, job: RunJob, t: planner.Task, script: str, tol: float
) -> dict[str, Any]:
    meta = job.history.meta
    argv = list(meta.get("argv") or [script])
    argv[0] = script
    return ReplayTask(
        replay_id=replay_id,
        run_id=job.history.run_id,
        store=store_path,
        script=script,
        cwd=meta.get("cwd") or os.path.dirname(script),
        argv=argv,
        args=dict(meta.get("args") or {}),
        steps=[s.to_json() for s in t.steps],
        run_to_end=t.run_to_end,
        new_names=sorted(job.names),
        check_names=sorted(job.check_names),
        tolerance=tol,
    ).to_json()


def _write_sources(workdir: str, run_id: str, job: RunJob) -> str:
    """Write the spliced sources under workdir/run_id/; return the script's path there.

    Ids and paths come from the store: checked again here (trust.py), so that no crafted one
    writes outside the private folder whatever path led here.
    """
    root = os.path.join(workdir, trust.check_run_id(run_id))
    for rel, text in job.splice.sources.items():
        path = os.path.join(root, trust.check_source_path(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:  # a fresh folder: nothing to overwrite
            f.write(text)
    return os.path.join(root, trust.check_source_path(script_rel(job.history.meta)))


def _progress_wanted(progress: bool) -> bool | None:
    """`FLORQL_PROGRESS=1` forces the bar, `=0` hides it; otherwise only on a terminal."""
    forced = config.progress_forced()
    if forced is not None:
        return forced
    return None if progress else False


def _replay_id() -> str:
    return "rp" + time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(3)


class _StoredSince:
    """Iterations each replay stored since an LSN, read back from the store."""

    def __init__(self, store: Store, lsn: int) -> None:
        self.store = store
        self.lsn = lsn

    def iterations(self, replay_id: str) -> set[int]:
        self.store.refresh()
        out: set[int] = set()
        for rec in self.store.scan(from_lsn=self.lsn + 1, kinds=[schema.VALUE]):
            if schema.replay_id_of(rec.body) == replay_id:
                out.add(schema.outer_iteration(rec.body[schema.CTX], history.AFTER_LOOP))
        return out


class _LiveCount:
    """Counts iterations stored so far by the given replays, reading only new records."""

    def __init__(self, store: Store, replay_ids: set[str]) -> None:
        self.store = store
        self.ids = replay_ids
        self.lsn = store.last_lsn
        self.seen: set[tuple[str, int]] = set()

    def count(self) -> int:
        self.store.refresh()
        for rec in self.store.scan(from_lsn=self.lsn + 1, kinds=[schema.VALUE]):
            self.lsn = rec.lsn
            replay_id = schema.replay_id_of(rec.body)
            if replay_id in self.ids:
                iteration = schema.outer_iteration(rec.body[schema.CTX], history.AFTER_LOOP)
                self.seen.add((replay_id, iteration))
        return len(self.seen)


def _leased_pairs(planned: tuple[HindsightPlan, set[str]]) -> set[tuple[str, str]]:
    """The (run, name) pairs a plan would replay: the leases it must hold."""
    hp = planned[0]
    return {(rp.run_id, name) for rp in hp.plan.runs for name in hp.jobs[rp.run_id].names}


def _other_edits_warning(hp: HindsightPlan) -> str:
    """The edits a replay leaves out, as a diff of what runs from the current code."""
    return "\n".join(
        [
            f"{len(hp.other_edits)} other edit(s) of the script are not replayed (the recorded "
            "code runs with only the new log statements); what runs differs from your code by:",
            *hp.diff_text(limit=code_diff.MAX_LINES),
        ]
    )


def _announce_if_foreign(store_path: str) -> None:
    """Before the first replay of a store made of another user's files: say what runs."""
    seen = os.path.join(config.cache_dir(), "foreign-stores-seen")
    trust.announce_foreign_store(store_path, seen)
