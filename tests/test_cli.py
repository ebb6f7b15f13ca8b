"""The command-line contract shared by every subcommand (flags, exit codes, one-line errors)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from florql_storage import Store, kinds

from florql import cli


def test_negative_tolerance_is_bad_input_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "--tolerance", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "florql: error: --tolerance -1.0 must be a number >= 0"


@pytest.mark.parametrize("command", ["replay", "query"])
def test_tolerance_flag_reaches_replay_as_an_argument(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from florql.replay import hindsight

    seen = []

    def fake_ensure(*args: object, **kw: object) -> hindsight.Report:
        seen.append(kw["tolerance"])
        return hindsight.Report()

    monkeypatch.setattr(hindsight, "ensure", fake_ensure)
    monkeypatch.delenv("FLORQL_REPLAY_TOLERANCE", raising=False)
    store = str(tmp_path / "store")
    s = Store.open(store)  # a store with one value of `loss`: `new_name` is missing
    w = s.writer()
    w.append(kinds.VALUE, ["r1", 1, "loss", 1.0, [], 0.0, ""])
    w.close()
    s.close()
    if command == "replay":
        argv = ["replay", "--store", store, "--name", "new_name", "--tolerance", "1e-6"]
    else:
        argv = ["query", "--store", store, "--tolerance", "1e-6", "SELECT new_name FROM logs"]
    assert cli.main(argv) == 0
    assert seen == [1e-6]
    assert "FLORQL_REPLAY_TOLERANCE" not in os.environ


def test_unknown_subcommand_exits_2() -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2


def test_store_defaults_to_environment_then_dot_florql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLORQL_STORE", raising=False)
    assert cli.default_store() == ".florql"
    monkeypatch.setenv("FLORQL_STORE", "/tmp/elsewhere")
    assert cli.default_store() == "/tmp/elsewhere"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--bogus"], "unknown option '--bogus': options go after the command"),
        ([], "a command is required, one of: record, query"),
        (["query", "--workers", "0", "SELECT 1"], "--workers 0 must be at least 1"),
        (["replay", "--workers", "-3"], "--workers -3 must be at least 1"),
        (["query", "--bogus", "SELECT 1"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_command_line_is_one_sentence_with_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors leave through exit()
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1 and err.startswith("florql: error: ")
