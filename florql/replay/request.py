"""One hindsight request, prepared: which runs, which new statements, what plan.

`prepare(store, names, selection, workers)` takes the steps that `plan` and `ensure` share
(see hindsight.py): read each run's current sources beside its recorded script (or beside
SCRIPT), splice the new statements that log wanted names into the recorded code, summarise the
runs the selection admits, subtract what earlier replays stored, and plan. The result,
`HindsightPlan`, is what `florql explain` prints (`describe()`) and what `ensure` executes.
"""

from __future__ import annotations

import ast
import os
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from florql import schema
from florql.errors import BadInputError, ReplayError
from florql.replay import executor, fallback, history, planner
from florql.replay.splicer import Splice, splice
from florql.replay.syntax import free_names, logged_names

if TYPE_CHECKING:
    from florql_storage import Store

_HISTORY_KINDS = [
    schema.LOOP,
    schema.LOOP_END,
    schema.RUN_END,
    schema.REPLAY_BEGIN,
    schema.REPLAY_END,
]


@dataclass
class RunJob:
    """One run's share of a request."""

    history: history.RunHistory
    splice: Splice
    names: set[str]
    placement: str
    check_names: set[str]
    current: dict[str, str | None] = field(default_factory=dict)  # the user's code now

    def diff(self) -> list[str]:
        """How the code this run replays differs from the current code (unified diff)."""
        from florql.replay.code_diff import diff_lines

        return diff_lines(self.current, self.splice.sources)


@dataclass
class HindsightPlan:
    """What a request would replay; `describe()` is `florql explain`'s text."""

    store_path: str
    names: list[str]
    jobs: dict[str, RunJob]
    plan: planner.Plan
    unresolved: set[str]
    warnings: list[str]
    # Names logged after the outer loop while other wanted names are logged inside it: a
    # request replays the others first, then these (`two_passes`).
    second_pass: set[str] = field(default_factory=set)

    @property
    def other_edits(self) -> list[str]:
        seen: list[str] = []
        for job in self.jobs.values():
            seen += [e for e in job.splice.other_edits if e not in seen]
        return seen

    def diff_text(self, limit: int | None = None) -> list[str]:
        """The unified diff of each distinct replayed code from the current code, indented."""
        from florql.replay.code_diff import shortened

        shown: list[list[str]] = []
        for job in self.jobs.values():
            if job.splice.other_edits and (d := job.diff()) and d not in shown:
                shown.append(d)
        lines = [line for d in shown for line in d]
        if limit is not None:
            lines = shortened(lines, limit)
        return [f"  {line}" for line in lines]

    def describe(self) -> str:
        lines = [f"hindsight replay of {', '.join(self.names) or '(nothing)'}"]
        if self.unresolved:
            lines.append(f"  no current code logs: {', '.join(sorted(self.unresolved))}")
        full = 0.0
        for rp in self.plan.runs:
            job = self.jobs[rp.run_id]
            h = job.history
            full += h.total_seconds
            where = {
                "outer": "per-epoch (after the inner loop): restore and skip the inner loop",
                "execute": "re-execute whole iterations",
                "after": "after the loop: restore the last state and run to the end",
            }[rp.placement]
            lines.append(
                f"run {rp.run_id}: {len(rp.selected)} of {len(h.iterations)} {h.outer} "
                f"iterations selected{_span(rp.selected)}; {where}"
            )
            lines.append(
                f"  {len(rp.executed)} iterations executed ({rp.inner_iterations} inner "
                f"iterations), {len(rp.checkpoints_used)} checkpoints used, {len(rp.tasks)} task(s)"
            )
            for st in job.splice.statements:
                lines.append(f"  + {st.file}:{st.line} {_one_line(st.text)}")
        if not self.plan.runs:
            lines.append("nothing to replay: every selected value is already stored")
        else:
            est = self.plan.estimate_seconds()
            how = "warm server running" if self.plan.warm else "fresh workers: they import torch"
            lines.append(
                f"estimate: {est:.1f}s with {self.plan.workers} worker(s) ({how}); "
                f"re-training these runs took {full:.1f}s"
            )
        if self.other_edits:
            lines.append(
                "other edits (not replayed: the recorded code runs, plus the new statements):"
            )
            lines += [f"  {e}" for e in self.other_edits]
            lines += self.diff_text()
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def prepare(
    store: Store,
    names: Iterable[str],
    selection: Any,
    workers: int | None,
    *,
    script: str | None = None,
    runs: Sequence[str] | None = None,
    optional: Iterable[str] = (),
    verify: int = 0,
) -> HindsightPlan:
    """Splice, summarise and plan against an open store.

    `optional` names are wanted only where a run's current code can log them (the SQL layer's
    names that other runs logged): a statement for them that cannot be placed in some run is a
    warning, not an error.
    """
    wanted = sorted(set(names))
    optional = set(optional)
    infos = store.runs()
    ids = chosen_runs(infos, runs)
    threads = _recorded_threads(infos, ids)
    nworkers = executor.default_workers(threads) if workers is None else workers
    if nworkers < 1:
        raise BadInputError(f"--workers must be at least 1, not {nworkers}")
    warnings: list[str] = []
    fits = executor.default_workers(threads)
    if nworkers > fits and not executor.visible_gpu_ids():
        warnings.append(
            f"{nworkers} workers x {threads} torch threads (the count the runs recorded, which "
            f"a bit-exact replay keeps) exceed this machine's cores: the workers will compete "
            f"and replay slower than --workers {fits}"
        )
    splices: dict[str, Splice] = {}
    cache: dict[tuple, Splice] = {}
    from florql.replay.trust import problem_with_run  # checks what the store says (issue 11)

    currents: dict[str, dict[str, str | None]] = {}
    for rid in ids:
        meta = infos[rid].meta or {}
        recorded = dict(meta.get("sources") or {})
        if not recorded:
            warnings.append(f"run {rid} recorded no source code; it cannot be replayed")
            continue
        problem = problem_with_run(rid, meta, script_rel(meta))
        if problem:  # a crafted or damaged store: its paths could point anywhere
            warnings.append(f"run {rid!r} is not replayed: {problem}")
            continue
        current = currents[rid] = current_sources(meta, script)
        mentioned = _mentioned(recorded, current, wanted)
        if not mentioned:  # no changed file names a wanted variable: nothing new can log it
            continue
        key = (tuple(sorted(recorded.items())), tuple(sorted(current.items(), key=str)))
        try:
            if key not in cache:
                cache[key] = splice(recorded, current, set(wanted))
        except ReplayError as e:
            # Only a run the request can select makes an unplaceable statement an error, and
            # only for a name the request needs from it.
            if selection.admits(rid, {}):
                if mentioned - optional:
                    raise type(e)(f"run {rid}: {e}") from None  # EditError stays bad input
                warnings.append(f"run {rid} is not replayed: {e}")
            continue
        splices[rid] = cache[key]
    resolvable = set().union(*(s.names for s in splices.values())) if splices else set()
    unresolved = set(wanted) - resolvable
    admitted = [rid for rid in splices if splices[rid].names and selection.admits(rid, {})]
    for rid in admitted:
        if infos[rid].status == "running":
            warnings.append(f"run {rid} is still running; replay it once it has ended")
    admitted = [rid for rid in admitted if infos[rid].status != "running"]
    histories = _histories(store, admitted, infos)
    jobs: dict[str, RunJob] = {}
    wants: list[tuple[history.RunHistory, set[str], str, set[int]]] = []
    second: set[str] = set()
    for rid in admitted:
        s, h = splices[rid], histories[rid]
        history.drop_unavailable(h, _reads(s))
        placement, after = _placement(s, h)
        if (s.names & set(wanted)) - after:  # mixed: those after the loop wait for a 2nd pass
            second |= after & set(wanted)
        run_names = s.names & set(wanted)
        done = set.intersection(*(h.covered(n) for n in run_names)) if run_names else set()
        recorded_names = set().union(
            *(logged_names(_parse(t)) for t in (h.meta.get("sources") or {}).values())
        )
        jobs[rid] = RunJob(h, s, run_names, placement, recorded_names - s.names)
        if verify:  # re-execute in full what is stored: never a restore-and-skip
            if placement != "after":
                wants.append((h, run_names, "execute", set()))
            continue
        wants.append((h, run_names, placement, done))
        for r in h.diverged_replays(run_names):
            warnings.append(
                f"stored replayed values of {', '.join(sorted(r.names & run_names))} in run {rid} "
                f"diverged from the recording when they were replayed ({r.replay_id})"
            )
    p, damaged = fallback.plan_around_damage(store, wants, selection.admits, nworkers, verify)
    p.warm = executor.warm_server_running()
    warnings += damaged + p.warnings
    jobs = {rid: job for rid, job in jobs.items() if any(r.run_id == rid for r in p.runs)}
    for rid, job in jobs.items():  # for the diff of what runs (`RunJob.diff`)
        job.current = currents[rid]
    return HindsightPlan(
        store.path if hasattr(store, "path") else "",
        wanted,
        jobs,
        p,
        unresolved,
        warnings,
        second,
    )


def _mentioned(
    recorded: dict[str, str], current: dict[str, str | None], names: Iterable[str]
) -> set[str]:
    """Names quoted in a current file that differs from its recorded version: only there can a
    new `florql.log("<name>", ...)` be (a cheap test before splicing).

    >>> sorted(_mentioned({"a.py": "x = 1"}, {"a.py": "x = 1; log('g', 2)"}, ["g", "h"]))
    ['g']
    >>> _mentioned({"a.py": "log('g', 1)"}, {"a.py": "log('g', 1)"}, ["g"])  # unchanged
    set()
    """
    out: set[str] = set()
    for rel, text in current.items():
        if text is None or text == recorded.get(rel):
            continue
        out |= {n for n in names if f'"{n}"' in text or f"'{n}'" in text}
    return out


def two_passes(
    store: Store, names: Iterable[str], selection: Any, workers: int | None, **kw: Any
) -> tuple[HindsightPlan, set[str]]:
    """`prepare`, but when some runs log wanted names both inside the outer loop and after it,
    the plan of the names inside it, and the names after it (for a second request once the
    first is done: replaying both in one pass would need the whole loop)."""
    hp = prepare(store, names, selection, workers, **kw)
    later = hp.second_pass
    if not later or not set(hp.names) - later:
        return hp, set()
    first = prepare(store, set(hp.names) - later, selection, workers, **kw)
    first.warnings.append(
        f"{', '.join(sorted(later))} (logged after the outer loop) "
        f"{'replays' if len(later) == 1 else 'replay'} in a second pass, after the names "
        "logged inside it"
    )
    return first, later


def current_sources(meta: dict[str, Any], script: str | None) -> dict[str, str | None]:
    """The current text of each recorded source path (None where the file is gone).

    Paths are relative to the recorded script's folder; with `script`, to that file's folder,
    and the recorded script's own entry reads `script` itself.
    """
    from florql.replay.trust import problem_with_source_path

    recorded = meta.get("sources") or {}
    own = script_rel(meta)
    base = os.path.dirname(os.path.abspath(script or meta.get("script") or "."))
    out: dict[str, str | None] = {}
    for rel in recorded:
        if problem_with_source_path(rel):  # never read outside the script's folder
            out[rel] = None
            continue
        path = os.path.abspath(script) if script and rel == own else os.path.join(base, rel)
        try:
            with open(path, encoding="utf-8") as f:
                out[rel] = f.read()
        except (OSError, UnicodeDecodeError):
            out[rel] = None
    return out


def script_rel(meta: dict[str, Any]) -> str:
    """The recorded script's path relative to its folder (its key in `sources`)."""
    return os.path.basename(meta.get("script") or "train.py")


def chosen_runs(infos: dict[str, Any], runs: Sequence[str] | None) -> list[str]:
    if not runs:
        return sorted(infos)
    unknown = [r for r in runs if r not in infos]
    if unknown:
        raise BadInputError(
            f"no run {', '.join(unknown)} in this store; `florql runs` lists the run ids"
        )
    return list(dict.fromkeys(runs))


def _histories(
    store: Store, ids: list[str], infos: dict[str, Any]
) -> dict[str, history.RunHistory]:
    wanted = set(ids)
    if not wanted:
        return {}
    recs: dict[str, list[tuple[int, Any]]] = {rid: [] for rid in ids}
    for rec in store.scan(kinds=_HISTORY_KINDS):
        rid = _run_of(rec.body)
        if rid in wanted:
            recs[rid].append((rec.kind, rec.body))
    out = {}
    for rid in ids:
        cks = [(c.ckpt_id, c.meta) for c in store.checkpoints(rid)]
        info = infos[rid]
        h = history.from_records(rid, info.meta or {}, recs[rid], cks, info.end)
        if any(r.status is None for r in h.replays):
            bodies = (r.body for r in store.scan(kinds=[schema.VALUE], run_id=rid))
            history.settle_unfinished(h, bodies)
        out[rid] = h
    return out


def _run_of(body: Any) -> str | None:
    if isinstance(body, dict):
        return body.get("run_id")
    if isinstance(body, list) and body:
        return body[0]
    return None


def _placement(s: Splice, h: history.RunHistory) -> tuple[str, set[str]]:
    """How a run's new statements replay: "outer", "execute" or "after" (see planner.py), and
    the names of statements after the outer loop when others sit inside it (those replay in a
    second pass, `HindsightPlan.second_pass`)."""
    kinds = set()
    after: set[str] = set()
    for st in s.statements:
        if st.loops == ():
            kinds.add("after")
            after |= set(st.names)
        elif st.loops and st.loops[0] == h.outer and st.after_inner:
            kinds.add("outer")
        else:
            kinds.add("execute")
    if kinds == {"after"}:
        return "after", set()
    return ("execute" if "execute" in kinds else "outer"), after


def _reads(s: Splice) -> set[str]:
    """Names the spliced statements read (a checkpoint missing one cannot replay them)."""
    out: set[str] = set()
    for st in s.statements:
        try:
            out |= free_names(ast.parse(textwrap.dedent(st.text)))
        except SyntaxError:
            continue
    return out


def _one_line(text: str, limit: int = 100) -> str:
    """A statement's text on one line (a multi-line call joined), shortened to `limit`.

    >>> _one_line('florql.log(\\n    "w",\\n    wn.item(),\\n)')
    'florql.log( "w", wn.item(), )'
    """
    flat = " ".join(part.strip() for part in text.splitlines())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _span(selected: list[int]) -> str:
    if not selected:
        return ""
    if selected == list(range(selected[0], selected[-1] + 1)) and len(selected) > 1:
        return f" (#{selected[0]}..#{selected[-1]})"
    return " (#" + ", #".join(map(str, selected[:8])) + (", ..." if len(selected) > 8 else "") + ")"


def _parse(text: str) -> Any:
    try:
        return ast.parse(text)
    except SyntaxError:
        return ast.parse("")


def _recorded_threads(infos: Any, ids: Sequence[str]) -> int:
    """The most torch threads any of these runs trained with (RUN_END stats; 1 if unknown)."""
    counts = [1]
    for rid in ids:
        end = infos[rid].end
        stats = end.get("stats") if isinstance(end, dict) else None
        if isinstance(stats, dict) and isinstance(stats.get("torch_threads"), int):
            counts.append(stats["torch_threads"])
    return max(counts)
