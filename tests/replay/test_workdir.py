"""A replay's temporary folder is removed however the request ends (issue 11 item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from florql.replay import workdir
from florql.replay.workdir import Workdir, sweep


def test_folder_is_removed_when_the_request_is_interrupted(tmp_path: Path) -> None:
    seen = []
    with pytest.raises(KeyboardInterrupt), Workdir(str(tmp_path)) as wd:
        seen.append(wd.path)
        Path(wd.path, "task-0.json").write_text("{}")
        raise KeyboardInterrupt
    assert seen and not os.path.exists(seen[0])
    assert list(tmp_path.iterdir()) == []


def test_kept_folder_of_a_failed_replay_stays_and_says_so(tmp_path: Path) -> None:
    with Workdir(str(tmp_path)) as wd:
        wd.keep()
    assert os.path.isdir(wd.path)
    assert (Path(wd.path) / workdir.KEPT).is_file()
    assert sweep(str(tmp_path)) == []  # young: the user may still read it
    later = time.time() + workdir.KEEP_SECONDS + 1
    assert sweep(str(tmp_path), now=later) == [wd.path]


_HOLDER = """
import sys, time
from florql.replay.workdir import Workdir
with Workdir(sys.argv[1]) as wd:
    print(wd.path, flush=True)
    time.sleep(600)
"""


def test_folder_of_a_killed_request_is_swept_by_the_next_one(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        path = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert os.path.isdir(path)
        assert sweep(str(tmp_path)) == []  # its owner still runs: not touched
        assert os.path.isdir(path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert os.path.isdir(path)  # SIGKILL ran no cleanup
    with Workdir(str(tmp_path)) as wd:  # a new request sweeps on start
        assert not os.path.exists(path)
        assert os.path.isdir(wd.path)


def test_sweep_leaves_links_and_other_files_alone(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    (target / "data").write_text("keep me")
    os.symlink(target, tmp_path / "florql-replay-planted")
    (tmp_path / "florql-replay-file").write_text("not a folder")
    assert sweep(str(tmp_path)) == []
    assert (target / "data").read_text() == "keep me"
