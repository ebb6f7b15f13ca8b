"""Runs a training script as `__main__` in this interpreter.

`run_script` behaves like `python SCRIPT ARGS`: the same `sys.argv`, `__name__ == "__main__"`,
the script's folder first on `sys.path`, exit code from `SystemExit`, and an uncaught exception
printed as Python prints it (florql's own frames left out), except bad input given to florql's
API, which the caller reports in one line (`api_error`). `run_task` executes one replay task
(docs/INTERFACES.md §3) and writes its result file.

>>> import tempfile
>>> from pathlib import Path
>>> p = str(Path(tempfile.mkdtemp()) / "s.py")
>>> _ = Path(p).write_text("import sys\\nprint(__name__, sys.argv[1:])\\nsys.exit(3)\\n")
>>> run_script(p, [p, "--x"]).exit_code
__main__ ['--x']
3
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from dataclasses import dataclass

from florql.errors import BadInputError, FlorqlError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class StopScript(BaseException):
    """Raised out of a loop generator to end a script early (a replay task's last step)."""


@dataclass
class Outcome:
    """How a script run ended: `exit_code`, and the exception that ended it (or None)."""

    exit_code: int
    exception: BaseException | None = None
    error: str | None = None


def compile_check(script: str) -> None:
    """Raise BadInputError unless `script` is a readable Python file that compiles."""
    if not os.path.exists(script):
        raise BadInputError(f"script {script} does not exist; give the path of a Python file")
    if not os.path.isfile(script):
        raise BadInputError(f"{script} is not a file; give the path of a Python script")
    try:
        with open(script, "rb") as f:
            source = f.read()
        compile(source, script, "exec")
    except SyntaxError as e:
        raise BadInputError(
            f"{script} is not valid Python: line {e.lineno}: {e.msg}; fix the script or "
            "give the right file"
        ) from None
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read {script} as a Python script: {e}") from None


def run_script(script: str, argv: list[str], extra_path: list[str] | None = None) -> Outcome:
    """Run `script` as __main__ with `sys.argv = argv`; never raises for the script's errors."""
    script = os.path.abspath(script)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(script))
    for p in extra_path or []:
        if p not in sys.path:
            sys.path.insert(1, p)
    try:
        runpy.run_path(script, run_name="__main__")
        return Outcome(0)
    except StopScript:
        return Outcome(0)
    except SystemExit as e:
        return _exit_outcome(e)
    except BaseException as e:
        if api_error(e) is None:
            _print_traceback(e, script)
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        return Outcome(130 if isinstance(e, KeyboardInterrupt) else 1, e, text)
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _exit_outcome(e: SystemExit) -> Outcome:
    code = e.code
    if code is None:
        return Outcome(0)
    if isinstance(code, int):
        return Outcome(code, None if code == 0 else e, None if code == 0 else f"SystemExit({code})")
    print(code, file=sys.stderr)
    return Outcome(1, e, f"SystemExit({code!r})")


def _print_traceback(e: BaseException, script: str) -> None:
    """Print `e` as Python would for the script: frames from the script's first one on."""
    tb = e.__traceback__
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename != script:
        first = first.tb_next
    traceback.print_exception(type(e), e, first or tb)


def api_error(e: BaseException | None) -> str | None:
    """For bad input given to florql's API (a name or value florql.log/loop/arg/args refuses,
    an `--arg` value that does not convert) raised from florql's own code: one line naming it
    and the script line. None for anything else (a florql bug is not the user's bad input).
    """
    if not isinstance(e, (TypeError, ValueError, FlorqlError)):
        return None
    if not (isinstance(e, FlorqlError) or str(e).startswith("florql.")):
        return None
    frames = list(traceback.walk_tb(e.__traceback__))
    if not frames or not frames[-1][0].f_code.co_filename.startswith(_PACKAGE_DIR):
        return None
    where = ""
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        path = frame.f_code.co_filename
        if not path.startswith(_PACKAGE_DIR) and "runpy" not in path and "<frozen" not in path:
            where = f" ({os.path.basename(path)} line {lineno})"
    return f"{e}{where}"
