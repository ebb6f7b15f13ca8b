"""What a run records about itself: argparse settings (under `florql record`; `florql.args`
under plain python) as args and `logs` columns, the command line, versions, host, rank and
world size in `runs`; misspelled `--arg` names said when the script starts using args; paths
that are not UTF-8 refused in one sentence; the overhead line counting logging."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from florql import session
from florql.sql.connection import Connection
from tests.recording.recutil import child_env, florql_cli

ARGPARSE = """
import argparse, pathlib, florql
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/a"))
sub = p.add_subparsers(dest="cmd")
sub.add_parser("train").add_argument("--opt", default="sgd")
a = p.parse_args()
{record}
for epoch in florql.loop("epoch", range(a.epochs)):
    florql.log("loss", a.lr / (epoch + 1))
"""


def query(store, sql: str) -> list[tuple]:
    con = Connection(str(store), replay=False)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def write(tmp_path, text: str, name: str = "train.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_an_argparse_script_under_record_has_its_settings_as_columns(tmp_path):
    script = write(tmp_path, ARGPARSE.format(record=""))
    r = florql_cli(
        "record", "--store", str(tmp_path / "st"), str(script),
        "--lr", "20", "--epochs", "2", "train", "--opt", "adam",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = query(tmp_path / "st", "SELECT epoch, loss, lr, epochs, out, cmd, opt FROM logs")
    assert rows == [(0, 20.0, 20.0, 2, "runs/a", "train", "adam"), (1, 10.0, 20.0, 2, "runs/a",
                    "train", "adam")]  # fmt: skip
    ((args, command, python, torch, host, rank, world),) = query(
        tmp_path / "st", "SELECT args, command, python, torch, host, rank, world_size FROM runs"
    )
    assert '"lr": 20.0' in args and '"opt": "adam"' in args
    assert command.startswith("florql record --store") and command.endswith("train --opt adam")
    assert python == sys.version.split()[0] and torch and host == os.uname().nodename
    assert (rank, world) == (0, 1)


def test_florql_args_records_a_namespace_under_plain_python_with_rank_and_world_size(tmp_path):
    script = write(tmp_path, ARGPARSE.format(record="florql.args(a)"))
    r = subprocess.run(
        [sys.executable, str(script), "--epochs", "1"],
        cwd=tmp_path,
        env=child_env(RANK="3", WORLD_SIZE="4"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    store = tmp_path / ".florql"
    assert query(store, "SELECT lr, epochs, cmd FROM logs") == [(0.1, 1, None)]
    assert query(store, "SELECT rank, world_size, degraded FROM runs") == [(3, 4, False)]


def test_the_argparse_patch_lives_only_while_the_script_runs(tmp_path):
    import argparse

    before = argparse.ArgumentParser.parse_known_args
    script = write(tmp_path, "import argparse\nargparse.ArgumentParser().parse_args([])\n")
    from florql import cli

    assert cli.main(["record", "--store", str(tmp_path / "st"), str(script)]) == 0
    assert argparse.ArgumentParser.parse_known_args is before


def test_a_misspelled_arg_is_said_when_the_script_starts_using_args(tmp_path):
    script = write(
        tmp_path,
        """
        import sys, florql
        lr = florql.arg("lr", 0.1)
        print("training", file=sys.stderr)
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), "--arg", "lrr=0.5", str(script))
    assert r.returncode == 0
    first, second = r.stderr.splitlines()[:2]
    assert first == (
        "florql: warning: --arg lrr names no florql.arg of the script (it declares: lr); "
        "it will have no effect; did you mean --arg lr=...?"
    )
    assert second == "training"  # before the script went on, not at the end
    assert r.stderr.count("lrr") == 1


def test_an_arg_given_to_an_argparse_script_points_to_its_command_line(tmp_path):
    script = write(tmp_path, ARGPARSE.format(record=""))
    r = florql_cli("record", "--store", str(tmp_path / "st"), "--arg", "lr=0.5", str(script))
    assert r.returncode == 0
    assert "the script reads lr from its command line (argparse): pass --lr VALUE" in r.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 file names")
@pytest.mark.parametrize("where", ["cwd", "script", "argument"])
def test_paths_and_arguments_that_are_not_utf8_are_refused_in_one_sentence(tmp_path, where):
    folder = os.path.join(os.fsencode(tmp_path), b"bad\xff" if where == "cwd" else b"ok")
    os.makedirs(folder)
    name = b"t\xfe.py" if where == "script" else b"t.py"
    with open(os.path.join(folder, name), "w") as f:
        f.write("import florql\nflorql.log('x', 1)\n")
    argv = [sys.executable, "-m", "florql", "record", "--store", str(tmp_path / "st"), name]
    if where == "argument":
        argv.append(b"x\xff")
    r = subprocess.run(argv, cwd=folder, env=child_env(), capture_output=True, timeout=120)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "is not valid UTF-8, which florql records as text" in err and "Traceback" not in err
    assert not (tmp_path / "st" / "log").exists()
    if where == "cwd":  # plain python: one sentence, the training goes on unrecorded
        r = subprocess.run(
            [sys.executable, name], cwd=folder, env=child_env(), capture_output=True, timeout=120
        )
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 0 and err.startswith("florql: error: this run is not recorded")
        assert len(err.strip().splitlines()) == 1


def test_the_overhead_counts_the_time_florql_log_takes_in_the_training_thread(tmp_path):
    script = tmp_path / "t.py"
    script.write_text("\n")
    s = session.Session(str(tmp_path / "st"), script=str(script), argv=["t.py"])
    s.start()
    big = list(range(1000))  # converting it costs florql.log a few hundred microseconds
    t0 = time.perf_counter()
    for i in range(3000):
        s.log("big", big)
        s.log("i", i)  # alternating cheap and costly calls: sampled at both phases
    spent = time.perf_counter() - t0
    stats = s.end()
    logged = stats["overhead_parts"]["log"] * stats["wall_seconds"]
    # An estimate from ~100 timed calls, on a shared machine: the bounds are loose, the point
    # is that logging is counted at all (it was not) and at about its real cost.
    assert 0.4 * spent <= logged <= 2.5 * spent
    assert stats["overhead"] >= stats["overhead_parts"]["log"]


def test_an_arg_that_does_not_convert_at_the_call_is_one_error_and_no_unused_warning(tmp_path):
    script = write(
        tmp_path,
        """
        import florql
        for e in florql.loop("epoch", range(1)):
            florql.log("x", e)
        NAME = "epochs"
        n = florql.arg(NAME, 3)  # a name the code does not spell: checked at the call
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), "--arg", "epochs=two", str(script))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1] == (
        "florql: error: --arg epochs=two: cannot convert to int (the default is 3) "
        "(train.py line 6)"
    )
    assert "never called" not in r.stderr and "failed: 1 values" in r.stderr
