"""The bad-input catalogue: every way a user can hand florql something it cannot take.

Each case, through the CLI (`florql.cli.main`, as `florql ...` runs it; a few also as a real
child process): exit 2, exactly one line on stderr naming the problem, no traceback, and the
store exactly as it was. Cases that are calls of the training-script API also raise
TypeError/BadInputError at the call itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import florql
from florql import cli, session
from florql.errors import BadInputError
from tests.recording.recutil import child_env

# (id, script text, fragment of the one-line message). Each script's first florql call is bad.
SCRIPT_CASES = [
    ("log-name-int", "florql.log(5, 1.0)", "florql.log(5, ...): the name must be a str, not int"),
    ("log-name-none", "florql.log(None, 1)", "the name must be a str, not NoneType"),
    ("log-name-empty", "florql.log('', 1)", "florql.log(''): a name must not be empty"),
    ("log-name-blank", "florql.log('  ', 1)", "a name must not be blank"),
    ("log-name-nul", "florql.log('a\\0b', 1)", "must not hold a NUL character"),
    ("log-name-long", "florql.log('x' * 300, 1)", "a name is at most 255 characters, not 300"),
    ("log-name-surrogate", "florql.log('a\\ud800', 1)", "the name holds a lone surrogate"),
    ("log-int-too-big", "florql.log('x', 10**30)", "is beyond the 64-bit range florql stores"),
    ("log-int-too-small", "florql.log('x', -2**63 - 1)", "is beyond the 64-bit range"),
    ("log-text-surrogate", "florql.log('x', 'a\\udcff')", "the string holds a lone surrogate"),
    ("log-complex-numpy", "florql.log('z', np.complex64(1+2j))", "value of type complex64"),
    ("log-complex", "florql.log('z', 1j)", "cannot log a value of type complex"),
    ("log-bytes", "florql.log('b', b'x')", "cannot log a value of type bytes"),
    ("log-object", "florql.log('m', object())", "cannot log a value of type object"),
    ("log-tuple-key", "florql.log('d', {(1, 2): 3})", "cannot log a value of type dict"),
    ("log-nested-surrogate", "florql.log('d', {'k': ['\\ud800']})", "lone surrogate"),
    ("loop-name-int", "list(florql.loop(5, range(3)))", "florql.loop(5, ...): the name must be"),
    ("loop-name-empty", "list(florql.loop('', range(3)))", "florql.loop(''): a name must not"),
    ("arg-name-empty", "florql.arg('', 1)", "florql.arg(''): a name must not be empty"),
    ("arg-value", "florql.arg('x', object())", "florql.arg('x', ...): cannot log a value"),
    ("arg-value-big", "florql.arg('x', 2**70)", "florql.arg('x', ...): the int"),
    ("args-type", "florql.args(5)", "florql.args takes an argparse Namespace or a dict, not int"),
    ("args-name", "florql.args({3: 1})", "florql.args(3, ...): the name must be a str"),
    ("arg-dynamic-cast", "florql.arg(NAME, 3)", "--arg epochs=two: cannot convert to int"),
]

# (id, argv after `florql`, fragment). SCRIPT is a good script, SYNTAX one that does not parse.
CLI_CASES = [
    ("no-script", ["record", "nope.py"], "does not exist"),
    ("script-folder", ["record", "FOLDER"], "is not a file"),
    ("syntax", ["record", "SYNTAX"], "is not valid Python: line 2"),
    ("no-script-given", ["record"], "needs a SCRIPT"),
    ("arg-no-equals", ["record", "--arg", "lr", "SCRIPT"], "is not NAME=VALUE"),
    ("arg-no-name", ["record", "--arg", "=5", "SCRIPT"], "is not NAME=VALUE"),
    ("arg-not-int", ["record", "--arg", "epochs=two", "SCRIPT"], "epochs=two: cannot convert"),
    ("arg-not-float", ["record", "--arg", "lr=fast", "SCRIPT"], "lr=fast: cannot convert to float"),
    ("arg-not-bool", ["record", "--arg", "flag=maybe", "SCRIPT"], "cannot convert to bool"),
    ("flordb-kwargs", ["record", "SCRIPT", "--kwargs", "lr=0.5"], "record --arg lr=0.5 SCRIPT"),
    ("overhead-big", ["record", "--overhead", "3", "SCRIPT"], "must be a fraction in (0, 1]"),
    ("overhead-zero", ["record", "--overhead", "0", "SCRIPT"], "must be a fraction"),
    ("store-is-file", ["record", "--store", "AFILE", "SCRIPT"], "is a file, not a folder"),
    ("resume-unknown", ["record", "--resume", "r-nope"], "no run r-nope in this store"),
    ("resume-finished", ["record", "--resume", "RUN"], "only a crashed run can be resumed"),
    ("resume-and-script", ["record", "--resume", "RUN", "SCRIPT"], "do not give a SCRIPT too"),
    ("tolerance", ["query", "--tolerance", "-1", "SELECT 1"], "--tolerance -1.0 must be"),
    ("query-no-store", ["query", "--store", "NOSTORE", "SELECT 1"], "no florql store at"),
    ("sql-write", ["query", "DELETE FROM records"], "DELETE"),
    ("sql-syntax", ["query", "SELEC epoch FROM logs"], "line 1"),
    ("sql-unknown", ["query", "SELECT nope FROM runs"], "unknown column 'nope'"),
    ("sql-ambiguous", ["query", "SELECT lr FROM logs"], "write log_lr for the logged values"),
    ("sql-file", ["query", "SELECT * FROM read_csv('x.csv')"], "read_csv"),
    ("check-no-store", ["check", "--store", "NOSTORE"], "no store at"),
    ("runs-no-store", ["runs", "--store", "NOSTORE"], "no store at"),
]

GOOD = """
import florql
def settings(**kwargs):  # names kwargs, yet has no such command-line option
    return kwargs
lr = florql.arg("lr", 0.1)
epochs = florql.arg("epochs", 2)
flag = florql.arg("flag", False)
for e in florql.loop("epoch", range(epochs)):
    florql.log("lr", lr)
"""


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file of the store and its bytes (lock files are empty and may be created)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and p.name != "LOCK"
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A project folder with a store holding one finished run (an arg and a logged value
    share the name `lr`)."""
    root = tmp_path_factory.mktemp("catalogue")
    (root / "ok.py").write_text(GOOD)
    (root / "bad.py").write_text("x = 1\ndef f(:\n")
    (root / "afile").write_text("not a store")
    (root / "folder").mkdir()
    store = root / "st"
    assert cli.main(["record", "--store", str(store), str(root / "ok.py")]) == 0
    (run_id,) = {p for p in _run_ids(store)}
    return {"root": root, "store": store, "run_id": run_id}


def _run_ids(store: Path) -> list[str]:
    from florql_storage import Store

    s = Store.open(str(store), create=False)
    try:
        return list(s.runs())
    finally:
        s.close()


def one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("florql: error: ") and fragment in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("case", "text", "fragment"), SCRIPT_CASES, ids=[c[0] for c in SCRIPT_CASES]
)
def test_bad_api_calls_in_a_recorded_script_exit_2_with_one_line_and_change_nothing(
    world, tmp_path, capsys, monkeypatch, case, text, fragment
):
    script = tmp_path / "s.py"
    script.write_text(f"import florql\nimport numpy as np\nNAME = 'epochs'\n{text}\n")
    before = snapshot(world["store"])
    capsys.readouterr()
    args = ["record", "--store", str(world["store"])]
    if case == "arg-dynamic-cast":  # a name the code does not spell: checked at the call
        args += ["--arg", "epochs=two"]
    code = cli.main([*args, str(script)])
    err = capsys.readouterr().err
    assert code == 2
    one_error_line(err, fragment)
    assert "(s.py line 4)" in err
    assert snapshot(world["store"]) == before
    assert session.CURRENT is None


@pytest.mark.parametrize(("case", "argv", "fragment"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_lines_exit_2_with_one_line_and_change_nothing(
    world, capsys, monkeypatch, case, argv, fragment
):
    root = world["root"]
    monkeypatch.chdir(root)
    monkeypatch.setenv("FLORQL_STORE", str(world["store"]))
    monkeypatch.setenv("FLORQL_CACHE_DIR", str(root / "cache"))
    names = {
        "SCRIPT": str(root / "ok.py"),
        "SYNTAX": str(root / "bad.py"),
        "FOLDER": str(root / "folder"),
        "AFILE": str(root / "afile"),
        "NOSTORE": str(root / "missing"),
        "RUN": world["run_id"],
    }
    argv = [names.get(a, a) for a in argv]
    before = snapshot(world["store"])
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    one_error_line(err, fragment)
    assert snapshot(world["store"]) == before
    assert not (root / "missing").exists()


def test_the_buffer_setting_is_checked_before_anything_runs(world, capsys, monkeypatch):
    monkeypatch.setenv("FLORQL_BUFFER_RECORDS", "lots")
    before = snapshot(world["store"])
    code = cli.main(["record", "--store", str(world["store"]), str(world["root"] / "ok.py")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "FLORQL_BUFFER_RECORDS=lots must be a positive")
    assert snapshot(world["store"]) == before


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: florql.log(5, 1.0), TypeError),
        (lambda: florql.log("", 1.0), BadInputError),
        (lambda: florql.log("x", 10**30), BadInputError),
        (lambda: florql.log("x", np.complex64(1 + 2j)), TypeError),
        (lambda: florql.log("x", "\ud800"), ValueError),
        (lambda: florql.loop(None, range(2)), TypeError),
        (lambda: florql.arg("", 1), BadInputError),
        (lambda: florql.args([1, 2]), TypeError),
    ],
)
def test_bad_api_calls_raise_at_the_call(tmp_path, call, error):
    script = tmp_path / "t.py"
    script.write_text("\n")
    s = session.Session(str(tmp_path / "st"), script=str(script), argv=["t.py"])
    s.start()
    session.install(s)
    try:
        with pytest.raises(error):
            call()
        assert florql.log("ok", 1) == 1  # the session goes on
    finally:
        stats = s.end()
        session.install(None)
    assert stats["values"] == 1


def test_a_bad_call_through_the_real_cli_is_one_line_without_traceback(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("import florql\nflorql.log(5, 1.0)\n"))
    r = subprocess.run(
        [sys.executable, "-m", "florql", "record", "--store", str(tmp_path / "st"), str(script)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    one_error_line(r.stderr, "florql.log(5, ...): the name must be a str, not int; write")
    assert r.stderr.endswith("(s.py line 2)\n")
    assert not os.path.exists(tmp_path / "st" / "log") or not _run_ids(tmp_path / "st")


def test_the_catalogue_has_at_least_thirty_cases():
    assert len(SCRIPT_CASES) + len(CLI_CASES) >= 30
