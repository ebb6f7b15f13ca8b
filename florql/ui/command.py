"""Handlers for `florql ui` and `florql plot` (flags are declared in florql/cli.py)."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

from florql.errors import BadInputError, StoreError


def ui_main(args: Any) -> int:
    """`florql ui [--store DIR] [--port N] [--host H]`: serve until Ctrl-C."""
    store = os.path.abspath(args.store)
    if not os.path.isdir(store):
        raise StoreError(
            f"no florql store at {store}; record a run first (`florql record train.py`) "
            "or pass --store / set FLORQL_STORE"
        )
    if not 0 <= args.port <= 65535:
        raise BadInputError(f"--port {args.port} must be between 0 and 65535")
    try:
        import uvicorn

        from florql.ui.server import create_app
    except ImportError as e:
        raise BadInputError(
            f"florql ui needs {e.name}; install it with `pip install 'florql[ui]'`"
        ) from None
    _check_free(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"florql ui: warning: serving on {args.host}, reachable from other machines; "
            "anyone with the URL's token can run replays",
            file=sys.stderr,
        )
    token = secrets.token_urlsafe(24)
    app = create_app(store, token)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    _announce_when_bound(server, args.host, token)
    try:
        server.run()
    finally:
        app.state.reader.close()
    return 0


def _check_free(host: str, port: int) -> None:
    """BadInputError when `host:port` cannot be bound (uvicorn would only log it)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise BadInputError(
                f"cannot listen on {host}:{port} ({e.strerror}); pick another --port "
                "(0 picks a free one) or --host"
            ) from None


def _announce_when_bound(server: Any, host: str, token: str) -> None:
    """Print the URL (with its token) once uvicorn knows its port (--port 0 picks one)."""
    started = server.startup

    async def startup(sockets: Any = None) -> None:
        await started(sockets=sockets)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else 0
        shown = f"[{host}]" if ":" in host else host
        print(f"florql ui: open http://{shown}:{port}/?token={token}", flush=True)
        print("florql ui: press Ctrl-C to stop", file=sys.stderr, flush=True)

    server.startup = startup


def plot_main(args: Any) -> int:
    """`florql plot NAME... [--by COL] [--x COL] [--sql SQL] -o FILE`."""
    from florql.ui.plot import plot

    path = plot(
        args.store,
        names=args.names,
        by=args.by,
        x=args.x,
        sql=args.sql,
        output=args.output,
        log_y=args.log,
    )
    print(f"florql plot: wrote {path}", file=sys.stderr)
    return 0


def add_commands(sub: Any, add_store: Any) -> None:
    """Declare `ui` and `plot` on the CLI's subparsers (handlers: this module)."""
    p = sub.add_parser("ui", help="local web view: runs, charts, SQL, hindsight")
    add_store(p)
    p.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p = sub.add_parser("plot", help="a static chart (PNG/SVG) of logged variables")
    add_store(p)
    p.add_argument("names", nargs="*", metavar="NAME", help="variables to plot")
    p.add_argument("--by", default="run_id", help="one line per value of this column")
    p.add_argument("--x", default="global_step", help="x axis: a loop column or global_step")
    p.add_argument("--sql", default=None, help="plot this query: first column x, others y")
    p.add_argument("--log", action="store_true", help="log-scale y axis")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.png or FILE.svg")
