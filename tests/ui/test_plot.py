"""`florql plot`: PNG/SVG files from names or SQL, drawn by matplotlib; bad input is exit 2."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.replay.conftest import env


def florql(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "florql", *args], capture_output=True,
                          text=True, env=env(), cwd=cwd, timeout=120)  # fmt: skip


def test_plot_names_by_run_writes_a_png(ui_store, tmp_path) -> None:
    out = tmp_path / "curves.png"
    done = florql("plot", "--store", ui_store, "loss", "acc", "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert width == 1100  # two panels side by side at 100 dpi


def test_plot_svg_has_one_line_per_run_in_the_legend(ui_store, tmp_path) -> None:
    out = tmp_path / "loss.svg"
    done = florql("plot", "--store", ui_store, "loss", "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    svg = out.read_text()
    # matplotlib writes each legend label as a text comment in the SVG.
    assert set(re.findall(r"<!-- (r\d) -->", svg)) == {"r1", "r2"}


def test_plot_from_sql_splits_by_run_id(ui_store, tmp_path) -> None:
    out = tmp_path / "acc.svg"
    sql = "SELECT epoch, run_id, acc FROM logs WHERE acc IS NOT NULL ORDER BY epoch"
    done = florql("plot", "--store", ui_store, "--sql", sql, "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(re.findall(r"<!-- (r\d acc) -->", out.read_text())) == {"r1 acc", "r2 acc"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loss", "-o", "x.jpg"], "must end in .png or .svg"),
        (["-o", "x.png"], "give variable names"),
        (["nosuch", "-o", "x.png"], "no run logged a numeric 'nosuch'"),
        (["loss", "--x", "batch", "-o", "x.png"], "is not a loop column"),
        (["loss", "-o", "missing/x.png"], "does not exist"),
        (["loss", "--by", "lr", "-o", "x.png"], "needs --x to be a loop column"),
        (["loss", "--by", "nope", "--x", "step", "-o", "x.png"], "is not a column of logs"),
    ],
)
def test_plot_bad_input_is_one_sentence_and_exit_2(ui_store, tmp_path, args, message) -> None:
    done = florql("plot", "--store", ui_store, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_plot_by_a_loop_column_or_an_arg(ui_store, tmp_path) -> None:
    out = tmp_path / "by.svg"
    args = ["plot", "--store", ui_store, "loss", "--by", "epoch", "--x", "step", "-o", str(out)]
    done = florql(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    labels = set(re.findall(r"<!-- (epoch=\d loss) -->", out.read_text()))
    assert labels == {"epoch=1 loss", "epoch=2 loss", "epoch=3 loss"}
    args = ["plot", "--store", ui_store, "acc", "--by", "lr", "--x", "epoch", "-o", str(out)]
    done = florql(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(re.findall(r"<!-- (lr=[\d.]+ acc) -->", out.read_text())) == {
        "lr=0.1 acc",
        "lr=0.01 acc",
    }
