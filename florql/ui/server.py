"""`florql ui`: a Starlette app over one store, served by uvicorn on 127.0.0.1.

Security contract:
- every `/api/...` request must carry the server's random token in the `X-Florql-Token`
  header (the page reads it from the `?token=` of the URL the server prints, as Jupyter does);
  the page itself needs `?token=` too. A cross-site page cannot set that header without a
  CORS preflight, which this server never grants, so a replay (which runs code) cannot be
  started from another site (CSRF).
- every query goes through `florql.sql.connection.Connection` with replay off: the same
  read-only SQL walls as `florql query`. Only `POST /api/hindsight` replays.
- nothing is fetched from the internet: the chart library (uPlot, MIT) is vendored in static/.
"""

from __future__ import annotations

import hmac
import threading
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from florql.errors import BadInputError, FlorqlError
from florql.sql.connection import Connection
from florql.ui import series
from florql.ui.jobs import Jobs

SQL_ROWS = 1000  # rows of a SQL box answer sent to the page
STATIC = files("florql.ui") / "static"


class Reader:
    """The server's one read-only connection, used by one request at a time."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._con = Connection(store, replay=False)
        self._lock = threading.Lock()

    def __call__(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            return fn(self._con, *args)

    def close(self) -> None:
        with self._lock:
            self._con.close()


def create_app(store: str, token: str, workers: int | None = None) -> Starlette:
    """The app for `store`; requests must carry `token` (see the module docstring)."""
    reader = Reader(store)
    jobs = Jobs(store, workers)

    def authorized(request: Request) -> bool:
        given = request.headers.get("x-florql-token") or ""
        return hmac.compare_digest(given.encode(), token.encode())

    def api(fn: Any) -> Any:
        """A JSON endpoint: token checked, FlorqlErrors as one sentence with status 400."""

        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return _refused()
            try:
                body = await request.json() if request.method == "POST" else {}
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return JSONResponse({"error": "the request body must be a JSON object"}, 400)
            try:
                from starlette.concurrency import run_in_threadpool

                return JSONResponse(await run_in_threadpool(fn, request, body))
            except FlorqlError as e:
                return JSONResponse({"error": str(e)}, status_code=400)

        return endpoint

    def index(request: Request) -> Response:
        given = request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _refused()
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    def runs(request: Request, body: dict) -> Any:
        metrics = [m for m in request.query_params.get("metrics", "").split(",") if m]
        return reader(series.runs_table, metrics)

    def names(request: Request, body: dict) -> Any:
        return {
            "names": reader(series.names),
            "loops": reader(series.loop_columns),
        }

    def chart(request: Request, body: dict) -> Any:
        q = request.query_params
        runs_ = tuple(r for r in q.get("runs", "").split(",") if r)
        try:
            width = int(q.get("width", "800"))
        except ValueError:
            raise BadInputError("width must be a whole number of pixels") from None
        req = series.SeriesRequest(q.get("name", ""), q.get("x", series.GLOBAL_STEP), runs_, width)
        return reader(series.read_series, req)

    def sql(request: Request, body: dict) -> Any:
        text = str(body.get("sql") or "").strip()
        if not text:
            raise BadInputError("the SQL box is empty; write a query such as SELECT * FROM runs")
        return reader(_answer, text)

    def explain(request: Request, body: dict) -> Any:
        from florql.sql.commands import explain_text
        from florql.ui.jobs import logs_sql

        name = _name_of(body)
        return {"name": name, "plan": reader(explain_text, logs_sql(name))}

    def candidates(request: Request, body: dict) -> Any:
        from florql.replay.hindsight import discover

        return {"names": sorted(discover(store))}

    def hindsight(request: Request, body: dict) -> Any:
        job = jobs.start(_name_of(body), lambda n: reader(_replayed_count, n))
        return job.public()

    def job(request: Request, body: dict) -> Any:
        found = jobs.get(request.path_params["job_id"])
        if found is None:
            raise BadInputError("no such replay job; start one from the Hindsight tab")
        try:
            seen = int(request.query_params.get("seen", "-1"))
        except ValueError:
            raise BadInputError("seen must be a whole number of values") from None
        return jobs.wait(found, seen, timeout=2.0)

    routes = [
        Route("/", index),
        Route("/api/runs", api(runs)),
        Route("/api/names", api(names)),
        Route("/api/chart", api(chart)),
        Route("/api/sql", api(sql), methods=["POST"]),
        Route("/api/explain", api(explain), methods=["POST"]),
        Route("/api/candidates", api(candidates)),
        Route("/api/hindsight", api(hindsight), methods=["POST"]),
        Route("/api/jobs/{job_id}", api(job)),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.reader = reader  # closed by whoever serves the app (florql/ui/command.py)
    return app


def _refused() -> Response:
    return PlainTextResponse(
        "florql ui: this request lacks the server's token; open the URL `florql ui` printed "
        "(it ends in ?token=...)",
        status_code=403,
    )


def _name_of(body: dict) -> str:
    name = str(body.get("name") or "").strip()
    if not name:
        raise BadInputError("name the variable to compute, as the script logs it (e.g. grad_norm)")
    return name


def _answer(con: Connection, text: str) -> dict[str, Any]:
    """The first SQL_ROWS rows of `text`, with column names, JSON-ready."""
    rel = con.sql(text)
    table = rel.arrow()
    head = table.slice(0, SQL_ROWS).to_pylist()
    cols = table.column_names
    rows = [[_json_value(r[c]) for c in cols] for r in head]
    return {"columns": cols, "rows": rows, "total": table.num_rows}


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else str(v)
    return str(v)


def _replayed_count(con: Connection, name: str) -> int:
    from florql.ui.series import quote_literal

    rows = con.sql(
        f"SELECT count(*) FROM records WHERE name = {quote_literal(name)} AND source = 'replay'"
    ).fetchall()
    return int(rows[0][0])
