"""`florql.connect()`: a read-only SQL connection to a store, shaped like DuckDB's Python API.

    con = florql.connect(".florql")
    con.sql("SELECT epoch, avg(loss) FROM logs GROUP BY epoch ORDER BY epoch").df()

Each `sql()` call catches up with the store first (so it works while a run is still recording),
then analyses the query (`analysis.py`): refuses anything but a read-only query, replays
variables no run logged when the current code logs them (`missing.py`), defines the views for
the names the query uses (`views.py`) and hands the user's own text to DuckDB. DuckDB runs
in memory with external access disabled and its configuration locked: a second wall behind
`safety.py`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from florql.config import default_store
from florql.errors import BadInputError, QueryError, StoreError
from florql.sql import views
from florql.sql.analysis import Analysis, analyze
from florql.sql.cache import Cache
from florql.sql.catalog import Catalog
from florql.sql.guard import run as guarded
from florql.sql.limits import default_memory_limit, parse_memory_limit
from florql.sql.missing import resolve_missing

if TYPE_CHECKING:
    from florql_storage import Store

_DUCKDB_CONFIG = {
    "enable_external_access": False,
    "python_enable_replacements": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


def _duckdb_call(call: Any, limits: Any) -> Any:
    """`call()`, with DuckDB's errors as one-sentence QueryErrors."""
    try:
        return call()
    except duckdb.OutOfMemoryException:
        raise QueryError(
            f"the query needs more memory than its limit of {limits.memory_limit}; select "
            "fewer rows, or raise the limit (--memory-limit, e.g. 16GB)"
        ) from None
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except duckdb.Error as e:
        raise QueryError(_clean_duckdb_error(e)) from None


def _clean_duckdb_error(e: duckdb.Error) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return f"DuckDB could not run the query: {first}"


_CACHE_FILES_IN_USE: set[str] = set()


def _store_class() -> Any:
    try:
        from florql_storage import Store
    except ImportError:  # the package may not re-export it yet
        from florql_storage.store import Store
    return Store


class Relation:
    """A query result, computed when asked: `df()`, `arrow()`, `pl()`, `fetchall()`,
    `fetchnumpy()`, `show()`, `to_parquet(path)`, `to_csv(path)`; HTML in notebooks."""

    def __init__(
        self,
        relation: duckdb.DuckDBPyRelation | None,
        analysis: Analysis,
        connection: Connection | None = None,
    ) -> None:
        self._relation = relation
        self.analysis = analysis
        self._connection = connection

    def _run(self, verb: str, *args: Any) -> Any:
        call = getattr(self._relation, verb)
        if self._connection is None:
            return _duckdb_call(lambda: call(*args), self)
        return self._connection._guarded(lambda: call(*args))

    @property
    def columns(self) -> list[str]:
        return list(self._relation.columns) if self._relation is not None else []

    def arrow(self) -> pa.Table:
        """The result as a pyarrow Table (DuckDB 2.0's own `arrow()` returns a reader)."""
        return self._run("to_arrow_table")

    def df(self) -> Any:
        """The result as a pandas DataFrame."""
        return self._run("df")

    def fetchall(self) -> list[tuple]:
        return self._run("fetchall")

    def fetchnumpy(self) -> dict[str, Any]:
        """The result as {column: NumPy array} (masked where a column holds NULLs)."""
        return self._run("fetchnumpy")

    def pl(self) -> Any:
        """The result as a Polars DataFrame (needs `pip install polars`)."""
        try:
            import polars
        except ImportError:
            raise BadInputError("Relation.pl() needs Polars: `pip install polars`") from None
        return polars.from_arrow(self.arrow())

    def to_parquet(self, path: str | os.PathLike) -> str:
        """Write the result to a Parquet file at `path` (written whole, then renamed)."""
        from florql.sql.export import write_table

        return write_table(self.arrow(), "parquet", path)

    def to_csv(self, path: str | os.PathLike) -> str:
        """Write the result to a CSV file at `path`, as `florql query --format csv` prints it."""
        from florql.sql.export import write_table

        return write_table(self.arrow(), "csv", path)

    def _repr_html_(self) -> str:
        """An HTML table for notebooks (first rows, with the row count)."""
        from florql.sql.html import html_table

        return html_table(self.arrow())

    def show(self) -> None:
        """Print the result as an aligned table with its row count."""
        from florql.sql.format import format_table

        print(format_table(self.arrow()), end="")

    def __repr__(self) -> str:
        from florql.sql.format import format_table

        return format_table(self.arrow())


class Connection:
    """A read-only connection to one store; not thread-safe (like a DuckDB connection)."""

    def __init__(
        self,
        store: str | os.PathLike | None = None,
        *,
        replay: bool = True,
        workers: int | None = None,
        progress: bool = False,
        persist: bool = False,
        memory_limit: str | None = None,
        timeout: float | None = None,
        tolerance: float | None = None,
        verify: int = 0,
        allow_damage: bool = False,
    ) -> None:
        self.store_path = os.path.abspath(
            os.fspath(store if store is not None else default_store())
        )
        self.replay = replay
        self.workers = workers
        self.progress = progress
        self.persist = persist
        self.memory_limit = (
            default_memory_limit() if memory_limit is None else parse_memory_limit(memory_limit)
        )
        if timeout is not None and not timeout > 0:
            raise BadInputError(f"--timeout {timeout} must be a number of seconds > 0")
        self.timeout = timeout  # of each DuckDB query, in seconds (None: no limit)
        self._own_temp: str | None = None  # DuckDB's spill folder when the cache has none
        self.tolerance = (
            tolerance  # of replay's fidelity check (None: $FLORQL_REPLAY_TOLERANCE or 0)
        )
        self.verify = verify  # iterations per run replay re-executes in full to check itself
        # Answer from the intact part of a damaged store, warning once (README: Damage).
        self.allow_damage = allow_damage
        self._store: Store | None = None
        self._duck_con: duckdb.DuckDBPyConnection | None = None
        self._cache: Cache | None = None
        self._cache_file: str | None = None

    # --- the DuckDB side ----------------------------------------------------------------------

    def _open_cache(self) -> None:
        store = self._open_store()
        con, state = None, None
        # A tolerant read of a damaged store is never saved: a later plain query must not
        # answer from it without the warning.
        if self.persist and not self.allow_damage:
            from florql.sql import persist

            store_id = persist.store_id_of(store)
            path = os.path.join(persist.cache_dir(), f"{store_id}.duckdb")
            # DuckDB shares one database among a process's connections to a file: a second
            # florql connection here would write the same tables, so it stays in memory.
            if store_id is not None and path not in _CACHE_FILES_IN_USE:
                con = persist.open_database(path, self._duckdb_config())
                if con is not None:
                    _CACHE_FILES_IN_USE.add(path)
                    self._cache_file = path
            if con is not None:
                state = persist.load_state(con, store)
        persistent = con is not None
        if con is None:
            con = duckdb.connect(":memory:", config=self._duckdb_config())
        con.execute("SET lock_configuration = true")
        self._duck_con = con
        try:
            self._cache = Cache(con, persistent=persistent, state=state)
        except (KeyError, TypeError, ValueError, duckdb.Error):
            # A cache written by another florql version: it is derived data, rebuild it.
            self._cache = Cache(con, persistent=persistent, state=None)

    def _duckdb_config(self) -> dict[str, Any]:
        """The walls (external access off) plus this connection's limits, and a private spill
        folder (DuckDB lets queries read its temporary folder; its default for an in-memory
        database is `.tmp` in the working folder)."""
        from florql.sql import persist

        try:
            temp = persist.temp_dir()
        except OSError:  # no usable cache folder (a read-only home): a private one of our own
            if self._own_temp is None:
                self._own_temp = tempfile.mkdtemp(prefix="florql-duckdb-")
            temp = self._own_temp
        return {**_DUCKDB_CONFIG, "temp_directory": temp, "memory_limit": self.memory_limit}

    @property
    def _duck(self) -> duckdb.DuckDBPyConnection:
        if self._duck_con is None:
            self._open_cache()
        assert self._duck_con is not None
        return self._duck_con

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            self._open_cache()
        assert self._cache is not None
        return self._cache

    # --- store --------------------------------------------------------------------------------

    def _open_store(self) -> Any:
        if self._store is None:
            if not os.path.isdir(self.store_path):
                raise StoreError(
                    f"no florql store at {self.store_path}; record a run first "
                    "(`florql record train.py`) or pass --store / set FLORQL_STORE"
                )
            self._store = _store_class().open(
                self.store_path, create=False, allow_damage=self.allow_damage
            )
            if self.allow_damage:
                _warn_damage(self._store)
        return self._store

    def refresh(self) -> int:
        """Catch up with the store; return how many records were decoded."""
        return self.cache.refresh(self._open_store())

    def catalog(self, extra_names: set[str] | frozenset[str] = frozenset()) -> Catalog:
        return views.catalog_of(self.cache, extra_names)

    # --- queries ------------------------------------------------------------------------------

    def analyze(self, query: str) -> Analysis:
        """Refresh, then analyse `query` without running it (used by `florql explain`)."""
        self.refresh()
        return analyze(query, self.catalog())

    def partially_logged(self, analysis: Analysis, catalog: Catalog) -> set[str]:
        """Names the query asks for by name that some run it can select did not log itself
        (another run did, or only a replay did): the current code of that run may log them
        now. `SELECT *` alone never starts a replay."""
        runs = [r for r in catalog.runs if analysis.selection.admits(r, {})]
        by_run = self.cache.recorded_by_run
        return {
            n
            for n in analysis.named & catalog.names
            if any(n not in by_run.get(r, ()) for r in runs)
        }

    def sql(self, query: str) -> Relation:
        """Answer `query`; replays missing variables first unless replay is off.

        Raises:
            QueryError: bad or forbidden SQL, or a variable no run logged and none can replay.
        """
        self.refresh()
        catalog = self.catalog()
        analysis = analyze(query, catalog)
        extra: set[str] = set()
        partial = self.partially_logged(analysis, catalog)
        report = resolve_missing(
            self.store_path,
            analysis.missing,
            analysis.selection,
            catalog,
            replay=self.replay,
            workers=self.workers,
            progress=self.progress,
            partial=partial,
            tolerance=self.tolerance,
            verify=self.verify,
        )
        if report is not None:
            self.refresh()
            catalog = self.catalog()
            # Names the replay was asked for but produced no value for (nothing selected):
            # shown as NULL columns rather than an error.
            extra = set(analysis.missing) - set(catalog.names)
            catalog = self.catalog(extra)
            analysis = analyze(query, catalog)
        views.define_views(self._duck, self.cache, catalog, analysis.names | extra)
        duck = self._duck
        # A SELECT is lazy here, but a PIVOT reads its data to learn its columns.
        relation = self._guarded(lambda: duck.sql(query))
        return Relation(relation, analysis, self)

    def _guarded(self, call: Any) -> Any:
        """`call()` on this connection's DuckDB, stoppable by Ctrl-C and `timeout`."""
        return guarded(self._duck, lambda: _duckdb_call(call, self), self.timeout)

    def close(self) -> None:
        if self._duck_con is not None:
            self._duck_con.close()
            self._duck_con = None
            self._cache = None
        if self._cache_file is not None:
            _CACHE_FILES_IN_USE.discard(self._cache_file)
            self._cache_file = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._own_temp is not None and self._duck_con is None:
            shutil.rmtree(self._own_temp, ignore_errors=True)
            self._own_temp = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    store: str | os.PathLike | None = None,
    *,
    replay: bool = True,
    workers: int | None = None,
    tolerance: float | None = None,
    verify: int = 0,
    allow_damage: bool = False,
    memory_limit: str | None = None,
    timeout: float | None = None,
) -> Connection:
    """Open a read-only connection to `store` (default `$FLORQL_STORE` or `./.florql`);
    `tolerance` is that of replay's fidelity check (default: exact); `verify`: iterations per
    run a replay re-executes in full afterwards to check what it stored; `allow_damage`
    answers from the intact part of a damaged store, with a warning on stderr naming what is
    lost; `memory_limit` (like "8GB"; default half the RAM) and `timeout` (seconds; default
    none) bound each query."""
    return Connection(
        store,
        replay=replay,
        workers=workers,
        tolerance=tolerance,
        verify=verify,
        allow_damage=allow_damage,
        memory_limit=memory_limit,
        timeout=timeout,
    )


def _warn_damage(store: Store) -> None:
    """One warning on stderr per damaged range a tolerant open stepped over."""
    import sys

    for lost in store.damage():
        runs = store.runs_around(lost)
        who = f" (runs recording then: {', '.join(runs)})" if runs else ""
        print(
            f"florql: warning: the store is damaged, answers leave out {lost.describe()}{who}; "
            "run `florql check --repair`",
            file=sys.stderr,
        )


_default: Connection | None = None


def default_connection() -> Connection:
    """The connection `florql.sql()` uses, opened on first use on the default store."""
    global _default
    if _default is None:
        _default = Connection()
    return _default
