"""The recording session in process: records, loop contexts, seq, lazy torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from florql_storage import Store, kinds

import florql
from florql import session
from tests.recording.recutil import child_env


@pytest.fixture()
def recording(tmp_path):
    """A session recording into a fresh store; yields a function returning the run's records."""
    script = tmp_path / "train.py"
    script.write_text("# placeholder\n")
    s = session.Session(str(tmp_path / "st"), script=str(script), argv=["train.py"])
    s.start()
    session.install(s)

    def records():
        s.end()
        st = Store.open(str(tmp_path / "st"), create=False)
        try:
            return [(r.kind, r.body) for r in st.scan(run_id=s.run_id)]
        finally:
            st.close()

    yield records
    s.end()
    session.install(None)


def test_log_returns_its_value_and_records_it_with_the_loop_context(recording):
    obj = [1, 2]
    assert florql.log("pair", obj) is obj
    for _e in florql.loop("epoch", ["a", "b"]):
        for _i, (x, _y) in florql.loop("step", enumerate([(1, 2), (3, 4)])):
            for k in florql.loop("micro", range(1)):
                florql.log("x", x + k)
    recs = recording()
    values = [b for k, b in recs if k == kinds.VALUE]
    assert values[0][2:5] == ["pair", [1, 2], []]
    assert [v[4] for v in values[1:]][:2] == [
        [["epoch", 0, "a"], ["step", 0, 0], ["micro", 0, 0]],
        [["epoch", 0, "a"], ["step", 1, 1], ["micro", 0, 0]],
    ]
    seqs = [
        b[1] if isinstance(b, list) else b["seq"]
        for k, b in recs
        if k not in (kinds.RUN_BEGIN, kinds.RUN_END)
    ]
    assert seqs == list(range(1, len(seqs) + 1))  # one counter for every record of the run
    ends = [b for k, b in recs if k == kinds.LOOP_END]
    assert [(b[2], b[4]) for b in ends][-1] == ("epoch", 2)


def test_break_out_of_the_inner_loop_ends_it_without_a_state_record(recording):
    total = 0
    for _e in florql.loop("epoch", range(2)):
        for i in florql.loop("step", range(10)):
            total += i
            if i == 3:
                break
        florql.log("total", total)
    recs = recording()
    ends = [b for k, b in recs if k == kinds.LOOP_END and b[2] == "step"]
    assert [b[4] for b in ends] == [4, 4]
    assert [b[3] for k, b in recs if k == kinds.VALUE] == [6, 12]


def test_values_that_cannot_be_logged_fail_at_the_call(recording):
    with pytest.raises(TypeError, match=r"florql\.log\('m', \.\.\.\)"):
        florql.log("m", object())
    florql.log("ok", 1)
    assert [b[2] for k, b in recording() if k == kinds.VALUE] == ["ok"]


def test_importing_florql_and_recording_a_script_without_torch_never_imports_torch(tmp_path):
    script = tmp_path / "t.py"
    script.write_text(
        "import sys, random, florql\n"
        "for e in florql.loop('e', range(3)):\n"
        "    florql.log('r', random.random())\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "florql", "record", "--store", str(tmp_path / "st"), str(script)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-c", "import sys, florql; print('torch' in sys.modules)"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout.strip() == "False"
