"""Running one DuckDB call so that Ctrl-C and a time limit stop it.

DuckDB executes a query in C++ without returning to the interpreter, and Python runs signal
handlers only in the main thread between bytecodes: a Ctrl-C during a long query (an endless
recursive CTE) would wait for the query to end. So the call runs in a helper thread while the
caller's thread waits in short, interruptible slices; on KeyboardInterrupt or at the deadline
it calls `connection.interrupt()` (DuckDB's own cancel: the query stops at its next check),
waits for the helper to return, and raises KeyboardInterrupt or `QueryError`.

>>> import duckdb
>>> con = duckdb.connect()
>>> run(con, lambda: con.sql("SELECT 42").fetchall(), timeout=None)
[(42,)]
>>> endless = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"
>>> run(con, lambda: con.sql(endless).fetchall(), timeout=0.2)
Traceback (most recent call last):
...
florql_storage.errors.QueryError: the query ran longer than its time limit of 0.2 s and was stopped; raise --timeout, or select fewer rows
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from florql.errors import QueryError

T = TypeVar("T")
_SLICE = 0.05  # how soon a Ctrl-C is noticed


def run(con: Any, call: Callable[[], T], timeout: float | None) -> T:
    """Run `call` (which uses DuckDB connection `con`), stoppable by Ctrl-C and `timeout`.

    Raises:
        KeyboardInterrupt: Ctrl-C; DuckDB was interrupted first.
        QueryError: the call ran longer than `timeout` seconds (None: no limit).
        Whatever `call` raises.
    """
    outcome: dict[str, Any] = {}
    # Waited on through an Event, never Thread.join: a join interrupted by Ctrl-C can mark a
    # running thread as stopped (CPython's _wait_for_tstate_lock releases its lock).
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e
        finally:
            done.set()

    helper = threading.Thread(target=target, name="florql-query", daemon=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    helper.start()
    try:
        while not done.wait(_SLICE):
            if deadline is not None and time.monotonic() >= deadline:
                _stop(con, done)
                raise QueryError(
                    f"the query ran longer than its time limit of {timeout:g} s and was "
                    "stopped; raise --timeout, or select fewer rows"
                )
    except KeyboardInterrupt:
        _stop(con, done)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _stop(con: Any, done: threading.Event) -> None:
    while not done.is_set():  # interrupt() is lost if it comes before the query starts
        con.interrupt()
        done.wait(_SLICE)
