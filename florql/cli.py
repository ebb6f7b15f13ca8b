"""The `florql` command line (also `python -m florql`).

Each subcommand's parser is declared here, in one place, because flags are the public contract;
the work is done by the layer that owns it (recording, SQL, replay). Errors are one sentence on
stderr; exit codes: 0 success, 1 the store is damaged or a replay failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from florql.config import default_store
from florql.errors import FlorqlError

# subcommand -> "module:function" taking the parsed namespace and returning an exit code.
HANDLERS = {
    "record": "florql.record_command:main",
    "query": "florql.sql.commands:query_main",
    "explain": "florql.sql.commands:explain_main",
    "replay": "florql.replay.commands:replay_main",
    "runs": "florql.record_command:runs_main",
    "check": "florql.check_command:check_main",
    "ui": "florql.ui.command:ui_main",
    "plot": "florql.ui.command:plot_main",
}


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", default=None, help="store folder (default: $FLORQL_STORE or ./.florql)"
    )


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


def _add_tolerance(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="T",
        help="relative/absolute tolerance of replay's fidelity check (default 0: exact; "
        "use e.g. 1e-6 for GPU runs)",
    )
    p.add_argument(
        "--verify",
        action="store_const",
        const=2,
        default=0,
        help="after replaying, re-execute 2 selected iterations per run in full and compare "
        "every value with what the run recorded and what replay stored",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one sentence on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        if "required: COMMAND" in message:
            message = f"a command is required, one of: {', '.join(HANDLERS)}"
        self.exit(2, f"florql: error: {message}; run `{self.prog} --help` for usage\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="florql", description="Hindsight logging for PyTorch training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("record", help="run a training script under recording")
    _add_store(p)
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a florql.arg value (repeatable)",
    )
    p.add_argument(
        "--overhead",
        type=float,
        default=None,
        metavar="FRACTION",
        help="checkpoint overhead budget as a fraction of wall time (default 0.02)",
    )
    p.add_argument("--resume", metavar="RUN", default=None, help="continue a crashed run")
    p.add_argument("script", nargs="?", help="the training script")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")

    p = sub.add_parser("query", help="answer SQL over what was logged")
    _add_store(p)
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write the result here")
    p.add_argument("--no-replay", action="store_true", help="never replay missing variables")
    p.add_argument("--workers", type=int, default=None, help="replay worker processes")
    p.add_argument(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        help="memory the query may use, like 8GB (default: half of the RAM)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop the query after this long (default: no limit; replay is not counted)",
    )
    _add_tolerance(p)
    p.add_argument(
        "--allow-damage",
        action="store_true",
        help="answer from the intact part of a damaged store (with a warning)",
    )
    p.add_argument("sql")

    p = sub.add_parser("explain", help="show what a query would read and replay")
    _add_store(p)
    p.add_argument("sql")

    p = sub.add_parser("replay", help="replay new log statements explicitly")
    _add_store(p)
    p.add_argument("--run", action="append", default=[], metavar="ID", help="only this run")
    p.add_argument("--where", default=None, metavar="PRED", help="SQL predicate on loop columns")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--name", action="append", default=[], help="only these new variables")
    _add_tolerance(p)
    p.add_argument(
        "script", nargs="?", help="current version of the script (default: recorded path)"
    )

    p = sub.add_parser("runs", help="list runs with their status")
    _add_store(p)
    _add_format(p)

    p = sub.add_parser("check", help="verify every record and page of the store")
    _add_store(p)
    p.add_argument(
        "--repair",
        action="store_true",
        help="quarantine damaged frames and segments, rebuild MANIFEST and index",
    )
    from florql.ui.command import add_commands

    add_commands(sub, _add_store)
    return parser


def _check_leading_option(argv: Sequence[str]) -> str | None:
    """A message when an option comes before the command (`florql --bogus`): argparse would
    only say that a command is missing."""
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        return (
            f"unknown option {argv[0]!r}: options go after the command "
            "(`florql query --store DIR SQL`); run `florql --help` for the commands"
        )
    return None


def _check_numbers(args: argparse.Namespace) -> str | None:
    """A message for a numeric flag outside its range (argparse checks only the type)."""
    tolerance = getattr(args, "tolerance", None)
    if tolerance is not None and not tolerance >= 0:  # NaN too
        return f"--tolerance {tolerance} must be a number >= 0"
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not timeout > 0:
        return f"--timeout {timeout} must be a number of seconds > 0"
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        return f"--workers {workers} must be at least 1 (leave it out for the default)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    problem = _check_leading_option(argv)
    if problem:
        print(f"florql: error: {problem}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    if getattr(args, "store", "unset") is None:
        args.store = default_store()
    problem = _check_numbers(args)
    if problem:
        print(f"florql: error: {problem}", file=sys.stderr)
        return 2
    module_name, func_name = HANDLERS[args.command].split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except FlorqlError as e:
        print(f"florql: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("florql: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        # The last wall: a file the layers below did not expect to lose (README: Damage).
        what = (
            "is missing" if isinstance(e, FileNotFoundError) else f"cannot be used ({e.strerror})"
        )
        print(f"florql: error: {e.filename or 'a file florql needs'} {what}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
