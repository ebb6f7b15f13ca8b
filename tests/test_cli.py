"""The command-line contract shared by every subcommand (flags, exit codes, one-line errors)."""

from __future__ import annotations

import os

import pytest

from florql import cli


def test_negative_tolerance_is_bad_input_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "--tolerance", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "florql: error: --tolerance -1.0 must be a number >= 0"


def test_tolerance_flag_reaches_replay_through_its_environment_knob(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("FLORQL_REPLAY_TOLERANCE", "0")  # restored after the test
    # No store there: the replay handler fails with bad input after the flag was applied.
    assert cli.main(["replay", "--store", str(tmp_path / "none"), "--tolerance", "1e-6"]) == 2
    assert float(os.environ["FLORQL_REPLAY_TOLERANCE"]) == 1e-6


def test_unknown_subcommand_exits_2() -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2


def test_store_defaults_to_environment_then_dot_florql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLORQL_STORE", raising=False)
    assert cli.default_store() == ".florql"
    monkeypatch.setenv("FLORQL_STORE", "/tmp/elsewhere")
    assert cli.default_store() == "/tmp/elsewhere"
