"""The second wall: a fingerprint of the recorded run's folders catches what the sandbox cannot
redirect (florql/replay/fingerprint.py)."""

from __future__ import annotations

import os
from pathlib import Path

from florql.replay.fingerprint import Watch, differences, take


def _folder(tmp_path: Path) -> Path:
    f = tmp_path / "proj"
    (f / "out").mkdir(parents=True)
    (f / "train.py").write_text("print(1)\n")
    (f / "out" / "model.pt").write_bytes(b"m")
    return f


def test_a_changed_added_or_removed_file_is_named(tmp_path: Path) -> None:
    f = _folder(tmp_path)
    watch = Watch([str(f)])
    (f / "out" / "model.pt").write_bytes(b"native write")
    (f / "new.onnx").write_bytes(b"n")
    (f / "train.py").unlink()
    assert watch.changed() == sorted(
        [str(f / "new.onnx"), str(f / "out" / "model.pt"), str(f / "train.py")]
    )
    (warning,) = watch.warnings("r1")
    assert (
        "run r1" in warning and "new.onnx" in warning and "native code or subprocesses" in warning
    )


def test_nothing_changed_gives_no_warning(tmp_path: Path) -> None:
    f = _folder(tmp_path)
    watch = Watch([str(f), str(f / "out")])  # overlapping roots are fine
    (f / "out" / "model.pt").read_bytes()
    assert watch.changed() == [] and watch.warnings("r1") == []


def test_excluded_folders_are_not_watched(tmp_path: Path) -> None:
    f = _folder(tmp_path)
    (f / ".florql").mkdir()
    watch = Watch([str(f)], exclude=[str(f / ".florql")])
    (f / ".florql" / "seg-1").write_bytes(b"the store grows during a replay")
    assert watch.changed() == []


def test_the_bound_limits_the_work_and_never_reports_files_beyond_it(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.mkdir()
    for i in range(20):
        (f / f"f{i:02d}").write_bytes(b"x")
    before = take([str(f)], limit=5)
    assert sorted(os.path.basename(p) for p in before) == [f"f{i:02d}" for i in range(5)]
    (f / "a-new-first").write_bytes(b"y")  # sorts first: pushes f04 past the bound
    (f / "f01").write_bytes(b"changed")
    after = take([str(f)], limit=5)
    assert differences(before, after, limit=5) == [str(f / "f01")]
