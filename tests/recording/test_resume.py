"""`florql record --resume`: a SIGKILLed run, resumed, equals an uninterrupted one (oracle)."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from florql_storage import Store, kinds

from tests.recording.recutil import EXAMPLE, TINY, effective_values, florql_cli, run_ids


def crash(store, script=EXAMPLE, at="2:5", extra=()):
    """Record `script` into `store` and SIGKILL it at epoch:step; returns the run id."""
    r = florql_cli(
        "record", "--store", str(store), *TINY, *extra, str(script), FLORQL_EXAMPLE_KILL_AT=at
    )
    assert r.returncode == -9, r.stderr
    crashed = [rid for rid, status in run_ids(store).items() if status == "crashed"]
    assert len(crashed) == 1
    return crashed[0]


def test_resumed_run_logs_exactly_what_an_uninterrupted_run_logs(recorded, tmp_path):
    store = tmp_path / "st"
    rid = crash(store, at="2:5")
    before = effective_values(store, rid)
    assert 0 < len(before) < len(recorded["values"])

    r = florql_cli("record", "--store", str(store), "--resume", rid)
    assert r.returncode == 0, r.stderr
    assert f"resumed run {rid} from checkpoint" in r.stderr and "inner_end)" in r.stderr
    assert run_ids(store) == {rid: "finished"}
    # The oracle: the uninterrupted recording of the same script and args.
    assert effective_values(store, rid) == recorded["values"]

    s = Store.open(str(store), create=False)
    try:
        resumes = list(s.scan(kinds=[kinds.RUN_RESUME]))
        ckpt_iters = [c.meta["ctx"][0][1] for c in s.checkpoints(rid)]
    finally:
        s.close()
    (resume,) = resumes
    assert resume.body["run_id"] == rid and resume.body["ckpt_id"]
    assert ckpt_iters == [0, 1, 2, 3]  # epochs 0-1 before the crash, 2-3 after the resume


def test_only_crashed_runs_can_be_resumed(recorded, tmp_path):
    store = tmp_path / "st"
    shutil.copytree(recorded["store"], store)
    r = florql_cli("record", "--store", str(store), "--resume", recorded["run_id"])
    assert r.returncode == 2 and "is finished; only a crashed run can be resumed" in r.stderr
    r = florql_cli("record", "--store", str(store), "--resume", "r-missing")
    assert r.returncode == 2 and "no run r-missing" in r.stderr


def test_crash_before_any_checkpoint_restarts_from_the_beginning(recorded, tmp_path):
    store = tmp_path / "st"
    rid = crash(store, at="0:3")
    r = florql_cli("record", "--store", str(store), "--resume", rid)
    assert r.returncode == 0, r.stderr
    assert "has no complete checkpoint; restarting it from the beginning" in r.stderr
    assert effective_values(store, rid) == recorded["values"]


@pytest.mark.parametrize("where", ["module", "function"])
def test_resume_restores_script_variables_in_module_and_function_scope(tmp_path, where):
    body = """
        import os, signal, torch, florql
        w = torch.zeros(1)
        florql.checkpointing(w=w)
        total = 0
        for epoch in florql.loop("epoch", range(4)):
            count = 0
            for i in florql.loop("step", range(3)):
                if (epoch, i) == (2, 1) and os.environ.get("FLORQL_EXAMPLE_KILL_AT"):
                    os.kill(os.getpid(), signal.SIGKILL)
                w += 1
                count += 1
                total += i
            florql.log("count", count)
            florql.log("total", total)
            florql.log("w", float(w))
    """
    if where == "function":
        body = "def main():\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\nmain()\n"
    script = tmp_path / "t.py"
    script.write_text(textwrap.dedent(body))
    clean = tmp_path / "clean"
    r = florql_cli("record", "--store", str(clean), "--overhead", "1", str(script))
    assert r.returncode == 0, r.stderr
    (clean_id,) = run_ids(clean)

    store = tmp_path / "st"
    r = florql_cli(
        "record", "--store", str(store), "--overhead", "1", str(script), FLORQL_EXAMPLE_KILL_AT="1"
    )
    assert r.returncode == -9
    (rid,) = run_ids(store)
    r = florql_cli("record", "--store", str(store), "--resume", rid)
    assert r.returncode == 0, r.stderr
    got = [v[1:] for v in effective_values(store, rid)]
    assert got == [v[1:] for v in effective_values(clean, clean_id)]
    assert ("total", 12, (("epoch", 3, 3),)) in got and ("count", 3, (("epoch", 3, 3),)) in got
