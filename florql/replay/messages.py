"""The replay task and its result (docs/INTERFACES.md §3): what crosses into a worker process
and back, each a dataclass with one encoder (`to_json`) and one decoder (`from_json`).

The wire form is JSON (a task file the worker reads, a result file it writes). Decoding a task
checks what a worker cannot run without; decoding a result fills what an older or failed
worker left out, so a reader never needs `.get` defaults of its own.

>>> t = ReplayTask("rp1", "r1", "/s", "/w/train.py", [{"iteration": 2, "action": "execute"}])
>>> ReplayTask.from_json(t.to_json()) == t
True
>>> ReplayTask.from_json({"run_id": "r1"})
Traceback (most recent call last):
...
florql_storage.errors.BadInputError: replay task has no 'replay_id'; see docs/INTERFACES.md §3
>>> TaskResult.from_json({"values": 3}).fidelity["checked"], TaskResult(error="x").to_json()["error"]
(0, 'x')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from florql.errors import BadInputError

ACTIONS = ("skip_inner", "silent_tail", "execute")
_REQUIRED = ("replay_id", "run_id", "store", "script", "steps")


@dataclass
class ReplayTask:
    """One worker's share of a replay: the steps to take in one run (INTERFACES §3)."""

    replay_id: str
    run_id: str
    store: str
    script: str
    steps: list[dict[str, Any]]
    cwd: str | None = None
    argv: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    run_to_end: bool = False
    new_names: list[str] = field(default_factory=list)
    check_names: list[str] = field(default_factory=list)
    tolerance: float = 0.0
    result_path: str | None = None  # set by the executor
    scratch: str | None = None  # set by the executor

    def to_json(self) -> dict[str, Any]:
        """The task file's content; optional fields left out when unset."""
        out: dict[str, Any] = {
            "replay_id": self.replay_id,
            "run_id": self.run_id,
            "store": self.store,
            "script": self.script,
            "cwd": self.cwd,
            "argv": list(self.argv),
            "args": dict(self.args),
            "steps": [dict(s) for s in self.steps],
            "run_to_end": self.run_to_end,
            "new_names": list(self.new_names),
            "check_names": list(self.check_names),
            "tolerance": self.tolerance,
        }
        for key in ("cwd", "result_path", "scratch"):
            value = getattr(self, key)
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ReplayTask:
        """The task a task file holds.

        Raises:
            BadInputError: a required field is missing or a step names an unknown action.
        """
        for key in _REQUIRED:
            if key not in d:
                raise BadInputError(f"replay task has no {key!r}; see docs/INTERFACES.md §3")
        for s in d["steps"]:
            if s.get("action") not in ACTIONS:
                raise BadInputError(
                    f"replay step {s} has action {s.get('action')!r}; use one of {ACTIONS}"
                )
        return cls(
            replay_id=d["replay_id"],
            run_id=d["run_id"],
            store=d["store"],
            script=d["script"],
            steps=list(d["steps"]),
            cwd=d.get("cwd") or None,
            argv=list(d.get("argv") or []),
            args=dict(d.get("args") or {}),
            run_to_end=bool(d.get("run_to_end")),
            new_names=list(d.get("new_names") or ()),
            check_names=list(d.get("check_names") or ()),
            tolerance=float(d.get("tolerance") or 0.0),
            result_path=d.get("result_path") or None,
            scratch=d.get("scratch") or None,
        )


def _no_mismatch() -> dict[str, Any]:
    return {"checked": 0, "matched": 0, "first_mismatch": None}


@dataclass
class TaskResult:
    """What a worker did: iterations executed, values written, fidelity, warnings, error."""

    replay_id: str = ""
    executed: list[int] = field(default_factory=list)
    inner_iterations: int = 0
    values: int = 0
    compared: int = 0
    conflicts: int = 0
    fidelity: dict[str, Any] = field(default_factory=_no_mismatch)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the exception line when the script failed

    def to_json(self) -> dict[str, Any]:
        """The result file's content (`error` only when the script failed)."""
        out: dict[str, Any] = {
            "replay_id": self.replay_id,
            "executed": list(self.executed),
            "inner_iterations": self.inner_iterations,
            "values": self.values,
            "compared": self.compared,
            "conflicts": self.conflicts,
            "fidelity": dict(self.fidelity),
            "warnings": list(self.warnings),
        }
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> TaskResult:
        """The result a result file holds; what it leaves out reads as nothing done."""
        d = d or {}
        fidelity = {**_no_mismatch(), **(d.get("fidelity") or {})}
        return cls(
            replay_id=str(d.get("replay_id") or ""),
            executed=[int(i) for i in d.get("executed") or ()],
            inner_iterations=int(d.get("inner_iterations") or 0),
            values=int(d.get("values") or 0),
            compared=int(d.get("compared") or 0),
            conflicts=int(d.get("conflicts") or 0),
            fidelity=fidelity,
            warnings=[str(w) for w in d.get("warnings") or ()],
            error=d.get("error") or None,
        )
