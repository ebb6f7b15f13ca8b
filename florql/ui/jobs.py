"""Hindsight replays started from the page: one background thread per request.

A job answers `SELECT ... NAME FROM logs` on its own connection with replay on, so florql's
normal path (plan, lease, workers, fidelity) does the work. Progress is what the store shows
while it runs: the replayed values of NAME made durable so far (each replayed iteration is one
atomic frame), against the iterations the plan selected. The page long-polls `wait()`.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from florql.errors import FlorqlError
from florql.sql.connection import Connection
from florql.ui.series import quote_ident


@dataclass
class Job:
    """One replay; `state` is `running`, `done` or `failed`."""

    job_id: str
    name: str
    state: str = "running"
    message: str = ""
    replayed: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def public(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state,
            "message": self.message,
            "replayed": self.replayed,
            "seconds": round(time.monotonic() - self.started if self.state == "running"
                             else self.seconds, 2),
        }  # fmt: skip


def logs_sql(name: str) -> str:
    """The `logs` query that makes florql replay `name` for every run that can log it."""
    return f"SELECT run_id, {quote_ident(name)} FROM logs WHERE {quote_ident(name)} IS NOT NULL"


class Jobs:
    """The replays of one server; at most one runs at a time (they would share workers)."""

    def __init__(self, store: str, workers: int | None = None) -> None:
        self.store = store
        self.workers = workers
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, name: str, counter: Any) -> Job:
        """Start replaying `name`; `counter(name)` reads how many replayed values are stored.

        Raises:
            BadInputError: another replay is still running.
        """
        from florql.errors import BadInputError

        with self._lock:
            if any(j.state == "running" for j in self._jobs.values()):
                raise BadInputError("a replay is already running; wait for it to finish")
            job = Job(secrets.token_hex(8), name)
            self._jobs[job.job_id] = job
        threading.Thread(target=self._run, args=(job, counter), daemon=True).start()
        threading.Thread(target=self._watch, args=(job, counter), daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def wait(self, job: Job, seen: int, timeout: float) -> dict[str, Any]:
        """The job's state once its progress passes `seen` or it ends, or after `timeout`."""
        with job.changed:
            job.changed.wait_for(
                lambda: job.state != "running" or job.replayed > seen, timeout=timeout
            )
        return job.public()

    def _run(self, job: Job, counter: Any) -> None:
        con = Connection(self.store, replay=True, workers=self.workers)
        replayed = job.replayed
        try:
            rows = con.sql(logs_sql(job.name)).fetchall()
            state, message = "done", f"{len(rows)} values of {job.name}"
            replayed = counter(job.name)  # the final count, whatever the watcher last saw
        except FlorqlError as e:
            state, message = "failed", str(e)
        except Exception as e:  # a florql bug: shown on the page, not a dead thread
            state, message = "failed", f"replay stopped by an unexpected error: {e!r}"
        finally:
            con.close()
        with job.changed:
            job.state, job.message, job.replayed = state, message, replayed
            job.seconds = time.monotonic() - job.started
            job.changed.notify_all()

    def _watch(self, job: Job, counter: Any) -> None:
        """Count the stored replayed values every half second while the job runs."""
        while job.state == "running":
            try:
                n = counter(job.name)
            except FlorqlError:
                n = job.replayed
            with job.changed:
                if n != job.replayed:
                    job.replayed = n
                    job.changed.notify_all()
            time.sleep(0.5)
