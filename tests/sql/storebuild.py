"""Building test stores through the real storage API, writing records as INTERFACES §2 says.

`RunLog` writes one run: RUN_BEGIN, then for each `log(ctx, name, value)` a VALUE record (and a
LOOP record whenever the loop context changes), then RUN_END. `naive_values(store)` is the
oracle's view of a store: a plain scan of its records, with no DuckDB involved.
"""

from __future__ import annotations

import time
from typing import Any

from florql_storage import kinds

try:
    from florql_storage import Store
except ImportError:  # pragma: no cover - until the package re-exports it
    from florql_storage.store import Store

__all__ = ["RunLog", "Store", "naive_values", "open_store"]


def open_store(path: str) -> Any:
    return Store.open(str(path), create=True)


def ctx_of(**loops: Any) -> list:
    """A ctx list from loop values, outermost first, iteration = position of the value.

    >>> ctx_of(epoch=2, step=5)
    [['epoch', 2, 2], ['step', 5, 5]]
    """
    return [[name, v if isinstance(v, int) else 0, v] for name, v in loops.items()]


class RunLog:
    """Writes one run into a store; `seq` is assigned per run as the recording session would."""

    def __init__(
        self,
        writer: Any,
        run_id: str,
        *,
        args: dict | None = None,
        script: str = "/project/train.py",
        t0: float = 1_700_000_000.0,
    ) -> None:
        self.w, self.run_id, self.seq, self.t = writer, run_id, 0, t0
        self.last_ctx: list | None = None
        meta = {
            "run_id": run_id,
            "script": script,
            "argv": [script],
            "args": args or {},
            "arg_overrides": {},
            "sources": {},
            "source_hash": "h-" + run_id,
            "cwd": "/project",
            "python": "3",
            "torch": None,
            "git": None,
            "started_at": t0,
            "pid": 1,
            "host": "test",
            "command": "florql record train.py",
        }
        writer.begin_run(run_id, meta)

    def _next(self) -> tuple[int, float]:
        self.seq += 1
        self.t += 0.001
        return self.seq, self.t

    def entries(self, ctx: list, values: dict, replay_id: str = "") -> list:
        """The records for logging `values` (name -> value) in `ctx`, LOOP first if it changed."""
        out = []
        if ctx and ctx != self.last_ctx and not replay_id:
            seq, t = self._next()
            out.append((kinds.LOOP, [self.run_id, seq, ctx[-1][0], ctx, t]))
        if not replay_id:
            self.last_ctx = ctx
        for name, value in values.items():
            seq, t = self._next()
            out.append((kinds.VALUE, [self.run_id, seq, name, value, ctx, t, replay_id]))
        return out

    def log(self, ctx: list, values: dict, *, atomic: bool = True, replay_id: str = "") -> None:
        self.w.append_many(self.entries(ctx, values, replay_id), atomic=atomic)

    def end(self, status: str = "finished", error: str | None = None) -> None:
        self.w.end_run(
            self.run_id,
            status,
            {"error": error, "ended_at": self.t + 1, "stats": {"values": self.seq}},
        )


def naive_values(store: Any) -> list[dict]:
    """Every visible VALUE as a dict, computed by a plain scan (the SQL oracle).

    Applies RUN_RESUME superseding; keys: run_id, lsn, seq, name, value, loops (dict), replay_id.
    """
    out: list[dict] = []
    store.refresh()
    for rec in store.scan():
        if rec.kind == kinds.VALUE:
            run_id, seq, name, value, ctx, _t, replay_id = rec.body[:7]
            loops = {level[0]: level[2] for level in ctx}
            out.append(
                {"run_id": run_id, "lsn": rec.lsn, "seq": seq, "name": name, "value": value,
                 "loops": loops, "replay_id": replay_id}
            )  # fmt: skip
        elif rec.kind == kinds.RUN_RESUME:
            b = rec.body
            out = [v for v in out if not (v["run_id"] == b["run_id"] and v["seq"] > b["seq"])]
    return out


def now() -> float:
    return time.time()
