"""Queries over a damaged store (issue 11, item 6): refused in one sentence by default; with
`--allow-damage` / `connect(..., allow_damage=True)` answered from the intact part, with a
warning, equal to a naive scan of an undamaged copy minus exactly the lost LSNs; after
`florql check --repair` answered again without the flag."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from florql_storage import Store
from florql_storage.segment import HEADER_SIZE, FrameScanner

import florql
from florql.cli import main
from tests.sql.storebuild import RunLog, ctx_of, naive_values, open_store


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> str:
    """Three runs over several segments; every logged context is one atomic frame."""
    path = str(tmp_path_factory.mktemp("intact") / ".florql")
    store = Store.open(path, create=True, segment_bytes=4096)
    w = store.writer()
    logs = [RunLog(w, f"r{i}") for i in (1, 2, 3)]
    for epoch in range(40):
        for log in logs:
            log.log(ctx_of(epoch=epoch), {"loss": 1.0 / (epoch + 1), "acc": epoch / 40})
            w.flush()
    for log in logs:
        log.end()
    w.close()
    store.close()
    return path


def _damage_a_middle_frame(intact: str, tmp_path) -> tuple[str, set[int]]:
    """A copy with one flipped byte in a frame of the second segment; its LSNs."""
    path = str(tmp_path / ".florql")
    shutil.copytree(intact, path)
    store = open_store(path)
    seg_no, first = store._manifest.segments[1]
    seg = f"{path}/log/{seg_no:08d}.seg"
    frames = list(FrameScanner(store.fs, seg, HEADER_SIZE, first))
    f = frames[len(frames) // 2]
    data = bytearray(pathlib.Path(seg).read_bytes())
    data[f.offset + 30] ^= 0xFF
    pathlib.Path(seg).write_bytes(bytes(data))
    return path, set(range(f.base_lsn, f.base_lsn + f.nrecs))


def _oracle(intact: str, lost: set[int]) -> list[tuple]:
    store = open_store(intact)
    rows = [v for v in naive_values(store) if v["lsn"] not in lost]
    return sorted((v["run_id"], v["lsn"], v["name"], v["value"]) for v in rows)


SQL = "SELECT run_id, lsn, name, value FROM records ORDER BY run_id, lsn"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Copies of one store share its id: each test gets its own SQL cache folder."""
    monkeypatch.setenv("FLORQL_CACHE_DIR", str(tmp_path / "cache"))


def test_a_damaged_store_is_refused_in_one_sentence(intact, tmp_path):
    path, _lost = _damage_a_middle_frame(intact, tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "florql", "query", "--store", path, SQL],
        capture_output=True,
        text=True,
        env={**os.environ, "FLORQL_CACHE_DIR": str(tmp_path / "cache")},
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "--repair" in r.stderr and "--allow-damage" in r.stderr


def test_allow_damage_answers_from_the_intact_part_with_a_warning(intact, tmp_path, capsys):
    path, lost = _damage_a_middle_frame(intact, tmp_path)
    with florql.connect(path, allow_damage=True, replay=False) as con:
        got = sorted(con.sql(SQL).fetchall())
    assert got == _oracle(intact, lost)
    full = _oracle(intact, set())
    missing = set(full) - set(got)
    assert missing and missing == {row for row in full if row[1] in lost}
    err = capsys.readouterr().err
    assert f"LSN {min(lost)}-{max(lost)}" in err and "check --repair" in err
    assert "runs recording then: r1, r2, r3" in err


def test_query_flag_and_repair_from_the_command_line(intact, tmp_path, capsys):
    path, lost = _damage_a_middle_frame(intact, tmp_path)
    csv_sql = ["--format", "csv", SQL]
    assert main(["query", "--store", path, "--allow-damage", *csv_sql]) == 0
    out = capsys.readouterr()
    assert "warning: the store is damaged" in out.err
    tolerant_answer = out.out
    assert main(["check", "--store", path]) == 1
    assert "frame_checksum" in capsys.readouterr().err
    assert main(["check", "--store", path, "--repair"]) == 0
    err = capsys.readouterr().err
    assert f"lost LSN {min(lost)}-{max(lost)}" in err and "quarantined" in err
    assert main(["check", "--store", path]) == 0
    assert "repaired earlier" in capsys.readouterr().err
    assert main(["query", "--store", path, *csv_sql]) == 0
    out = capsys.readouterr()
    assert out.out == tolerant_answer and "warning" not in out.err


def test_a_missing_segment_is_one_sentence_naming_it(intact, tmp_path, capsys):
    path = str(tmp_path / ".florql")
    shutil.copytree(intact, path)
    os.remove(f"{path}/log/00000001.seg")
    assert main(["query", "--store", path, SQL]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}/log/00000001.seg is missing" in err
    assert main(["query", "--store", path, "--allow-damage", SQL]) == 0
    assert "00000001.seg" in capsys.readouterr().err


def test_any_file_system_error_left_is_one_sentence_with_the_path(monkeypatch, capsys):
    """The CLI's last wall: a PermissionError no layer expected is not a traceback."""
    import florql.check_command as cc

    def denied(args):
        raise PermissionError(13, "Permission denied", "/some/store/index/1.idx")

    monkeypatch.setattr(cc, "check_main", denied)
    assert main(["check", "--store", "."]) == 1
    err = capsys.readouterr().err
    assert err == "florql: error: /some/store/index/1.idx cannot be used (Permission denied)\n"
