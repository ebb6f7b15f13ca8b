"""`florql record`, `florql runs`, `florql check` end to end, on the real store."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from florql_storage import Store, kinds

from tests.recording.recutil import EPOCHS, EXAMPLE, STEPS, child_env, florql_cli, run_ids


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def open_store(path: Path) -> Store:
    return Store.open(str(path), create=False)


def test_recording_the_example_stores_every_value_loop_and_checkpoint(recorded):
    values = recorded["values"]
    names = [v[1] for v in values]
    assert names.count("loss") == EPOCHS * STEPS
    assert names.count("accuracy") == names.count("train_loss") == EPOCHS
    assert [v[0] for v in values] == sorted({v[0] for v in values})  # seq strictly increasing
    losses = [v for v in values if v[1] == "loss"]
    assert losses[0][3] == (("epoch", 0, 0), ("step", 0, 0))
    assert losses[-1][3] == (("epoch", EPOCHS - 1, EPOCHS - 1), ("step", STEPS - 1, STEPS - 1))

    s = open_store(Path(recorded["store"]))
    try:
        run = s.runs()[recorded["run_id"]]
        meta = run.meta
        ckpts = s.checkpoints(recorded["run_id"])
        kinds_seen = {r.kind for r in s.scan(run_id=recorded["run_id"])}
    finally:
        s.close()
    assert run.status == "finished"
    assert meta["script"] == str(EXAMPLE) and meta["args"]["epochs"] == EPOCHS
    assert meta["arg_overrides"] == {"epochs": "4", "samples": "512"}
    assert (
        "train_cnn.py" in meta["sources"] and meta["sources"]["train_cnn.py"] == EXAMPLE.read_text()
    )
    assert meta["python"] == sys.version.split()[0] and meta["torch"]
    assert run.end["stats"]["values"] == len(values) and run.end["stats"]["checkpoints"] == EPOCHS
    # --overhead 1: every epoch is checkpointed where its inner loop ends
    assert [c.meta["ctx"] for c in ckpts] == [[["epoch", e, e]] for e in range(EPOCHS)]
    assert {c.meta["phase"] for c in ckpts} == {"inner_end"}
    assert all(c.raw_bytes > 0 and c.stored_bytes > 0 for c in ckpts)
    assert set(ckpts[0].meta["objects"]) == {"model", "optimizer", "scheduler"}
    assert "running" in ckpts[0].meta["vars"]
    assert {
        kinds.RUN_BEGIN,
        kinds.LOOP,
        kinds.LOOP_END,
        kinds.RNG,
        kinds.STATE,
        kinds.RUN_END,
    } <= kinds_seen


def test_script_runs_as_main_with_its_args_folder_and_local_modules(tmp_path):
    proj = tmp_path / "proj"
    write(proj / "storage.py", "SHADOW = True\n")  # must not shadow florql's storage engine
    write(proj / "helpers" / "__init__.py", "def double(x):\n    return 2 * x\n")
    script = write(
        proj / "train.py",
        """
        import sys, florql, storage
        from helpers import double
        assert __name__ == "__main__" and storage.SHADOW
        florql.log("argv", sys.argv[1:])
        for i in florql.loop("i", range(3)):
            florql.log("d", double(i))
        """,
    )
    store = tmp_path / "st"
    r = florql_cli("record", "--store", str(store), str(script), "--flag", "x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 checkpoints" not in r.stderr and "4 values" in r.stderr
    (rid,) = run_ids(store)
    s = open_store(store)
    try:
        meta = s.runs()[rid].meta
        vals = [r.body[2:4] for r in s.scan(kinds=[kinds.VALUE])]
    finally:
        s.close()
    assert vals == [["argv", ["--flag", "x"]], ["d", 0], ["d", 2], ["d", 4]]
    assert sorted(meta["sources"]) == ["helpers/__init__.py", "storage.py", "train.py"]
    assert meta["argv"] == [str(script), "--flag", "x"] and meta["git"] is None


def test_failing_script_keeps_its_values_exits_1_and_is_marked_failed(tmp_path):
    script = write(
        tmp_path / "bad.py",
        """
        import florql
        for i in florql.loop("i", range(5)):
            florql.log("x", i)
            if i == 2:
                raise ValueError("boom at 2")
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), str(script))
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr and "ValueError: boom at 2" in r.stderr
    assert "florql/runner.py" not in r.stderr  # shown as Python would show it
    s = open_store(tmp_path / "st")
    try:
        (run,) = s.runs().values()
        xs = [r.body[3] for r in s.scan(kinds=[kinds.VALUE])]
    finally:
        s.close()
    assert run.status == "failed" and "boom at 2" in run.end["error"]
    assert xs == [0, 1, 2]


def test_exit_code_of_the_script_is_returned(tmp_path):
    script = write(tmp_path / "s.py", "import florql, sys\nflorql.log('a', 1)\nsys.exit(3)\n")
    r = florql_cli("record", "--store", str(tmp_path / "st"), str(script))
    assert r.returncode == 3


def test_plain_python_records_into_the_default_store(tmp_path):
    script = write(
        tmp_path / "t.py",
        """
        import florql
        lr = florql.arg("lr", 0.1)
        for e in florql.loop("epoch", range(2)):
            florql.log("lr", lr)
        """,
    )
    import subprocess

    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert run_ids(tmp_path / ".florql") and set(run_ids(tmp_path / ".florql").values()) == {
        "finished"
    }
    r = subprocess.run(
        [sys.executable, "-c", "import florql; florql.log('a', 1); raise SystemError('x')"],
        cwd=tmp_path,
        env=child_env(FLORQL_STORE=str(tmp_path / "other")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "SystemError" in r.stderr
    assert list(run_ids(tmp_path / "other").values()) == ["failed"]


def test_loops_without_inner_loop_checkpoint_at_iteration_end(tmp_path):
    script = write(
        tmp_path / "t.py",
        """
        import torch, florql
        w = torch.zeros(3)
        florql.checkpointing(w=w)
        for e in florql.loop("epoch", ["a", "b", "c"]):
            w += 1
            florql.log("s", float(w.sum()))
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), "--overhead", "1", str(script))
    assert r.returncode == 0, r.stderr
    s = open_store(tmp_path / "st")
    try:
        ckpts = s.checkpoints()
        metas = [c.meta for c in ckpts]
        blobs = [s.load_checkpoint(c)[1] for c in ckpts]
    finally:
        s.close()
    assert [m["ctx"] for m in metas] == [
        [["epoch", 0, "a"]],
        [["epoch", 1, "b"]],
        [["epoch", 2, "c"]],
    ]
    assert {m["phase"] for m in metas} == {"iter_end"}
    import numpy as np

    assert [np.frombuffer(b[0], dtype=np.float32).tolist() for b in blobs] == [
        [1.0] * 3,
        [2.0] * 3,
        [3.0] * 3,
    ]


def test_checkpointing_as_a_context_manager_registers_on_entry_and_keeps_it_after(tmp_path):
    # FlorDB's form. After the block the objects stay registered: a second outer-level loop
    # after it still checkpoints them (only the first top-level loop is the outer loop, so its
    # checkpoints are the ones taken).
    script = write(
        tmp_path / "t.py",
        """
        import torch, florql
        w = torch.zeros(2)
        with florql.checkpointing(w=w) as reg:
            for e in florql.loop("epoch", range(3)):
                w += 1
                florql.log("s", float(w.sum()))
        florql.log("names", list(reg.names))
        florql.log("after", float(w.sum()))
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), "--overhead", "1", str(script))
    assert r.returncode == 0, r.stderr
    s = open_store(tmp_path / "st")
    try:
        ckpts = s.checkpoints()
        blobs = [s.load_checkpoint(c)[1] for c in ckpts]
        logged = {
            rec.body[2]: rec.body[3] for rec in s.scan(kinds=[kinds.VALUE]) if not rec.body[4]
        }
    finally:
        s.close()
    import numpy as np

    assert [np.frombuffer(b[0], dtype=np.float32).tolist() for b in blobs] == [
        [1.0] * 2,
        [2.0] * 2,
        [3.0] * 2,
    ]
    assert logged == {"names": ["w"], "after": 6.0}


def test_an_error_inside_a_checkpointing_block_fails_the_run_with_that_error(tmp_path):
    script = write(
        tmp_path / "t.py",
        """
        import torch, florql
        with florql.checkpointing(w=torch.zeros(1)):
            raise KeyError("boom")
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), str(script))
    assert r.returncode == 1 and "KeyError: 'boom'" in r.stderr
    assert list(run_ids(tmp_path / "st").values()) == ["failed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.py"], "does not exist"),
        (["--arg", "lr", "SCRIPT"], "is not NAME=VALUE"),
        (["--overhead", "3", "SCRIPT"], "must be a fraction"),
        (["SYNTAX"], "is not valid Python: line 2"),
        ([], "needs a SCRIPT"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, message):
    good = write(tmp_path / "ok.py", "import florql\nflorql.log('a', 1)\n")
    bad = write(tmp_path / "bad.py", "x = 1\ndef f(:\n")
    args = [str(good) if a == "SCRIPT" else str(bad) if a == "SYNTAX" else a for a in args]
    r = florql_cli("record", "--store", str(tmp_path / "st"), *args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "st").exists() or run_ids(tmp_path / "st") == {}


def test_unknown_arg_warns_and_the_run_still_records(tmp_path):
    script = write(tmp_path / "s.py", "import florql\nflorql.log('lr', florql.arg('lr', 0.1))\n")
    r = florql_cli(
        "record",
        "--store",
        str(tmp_path / "st"),
        "--arg",
        "lr=0.5",
        "--arg",
        "bogus=1",
        str(script),
    )
    assert r.returncode == 0
    # said when the script starts using args (its code declares only lr), once
    assert r.stderr.startswith(
        "florql: warning: --arg bogus names no florql.arg of the script (it declares: lr)"
    )
    assert r.stderr.count("bogus") == 1
    s = open_store(tmp_path / "st")
    try:
        (run,) = s.runs().values()
        (v,) = [r.body[3] for r in s.scan(kinds=[kinds.VALUE])]
    finally:
        s.close()
    assert v == 0.5 and run.meta["args"] == {"lr": 0.5}


def test_unloggable_value_fails_the_run_with_one_line_exit_2(tmp_path):
    script = write(
        tmp_path / "s.py", "import florql\nflorql.log('ok', 1)\nflorql.log('model', object())\n"
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), str(script))
    assert r.returncode == 2
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("florql: error:")]
    assert (
        "florql.log('model', ...): cannot log a value of type object" in line
        and "s.py line 3" in line
    )
    s = open_store(tmp_path / "st")
    try:
        (run,) = s.runs().values()
        values = [r.body[2] for r in s.scan(kinds=[kinds.VALUE])]
    finally:
        s.close()
    assert run.status == "failed" and values == ["ok"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_unwritable_store_is_bad_input(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    script = write(tmp_path / "s.py", "import florql\nflorql.log('a', 1)\n")
    r = florql_cli("record", "--store", str(ro / "st"), str(script))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_store_that_is_a_file_is_bad_input(tmp_path):
    (tmp_path / "afile").write_text("x")
    script = write(tmp_path / "s.py", "import florql\nflorql.log('a', 1)\n")
    r = florql_cli("record", "--store", str(tmp_path / "afile"), str(script))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_runs_lists_runs_in_every_format_and_check_reports_clean(recorded):
    store = recorded["store"]
    r = florql_cli("runs", "--store", store, "--format", "json")
    assert r.returncode == 0
    (row,) = json.loads(r.stdout)
    assert row["run_id"] == recorded["run_id"] and row["status"] == "finished"
    assert row["values"] == len(recorded["values"]) and row["checkpoints"] == EPOCHS
    assert row["args"]["epochs"] == EPOCHS
    csv_out = florql_cli("runs", "--store", store, "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("run_id,script,status") and recorded["run_id"] in csv_out[1]
    table = florql_cli("runs", "--store", store).stdout
    assert "finished" in table and "train_cnn.py" in table
    r = florql_cli("check", "--store", store)
    assert r.returncode == 0 and "clean" in r.stderr


@pytest.mark.parametrize("where", ["log", "pages"])
def test_check_reports_damage_with_its_location_and_exits_1(recorded, tmp_path, where):
    import shutil

    store = tmp_path / "st"
    shutil.copytree(recorded["store"], store)
    victim = sorted(p for p in (store / where).rglob("*") if p.is_file())[0]
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF  # inside the first frame / page
    victim.write_bytes(bytes(data))
    r = florql_cli("check", "--store", str(store))
    assert r.returncode == 1
    assert "segment" in r.stderr and "offset" in r.stderr and "lsn" in r.stderr


def test_adaptive_policy_spaces_costly_checkpoints_to_fit_the_budget(tmp_path):
    script = write(
        tmp_path / "t.py",
        """
        import time, torch, florql
        w = torch.zeros(8_000_000)  # 32 MB: a checkpoint costs far more than 2% of 20 ms
        florql.checkpointing(w=w)
        for e in florql.loop("epoch", range(30)):
            time.sleep(0.02)
            w += 1
        """,
    )
    r = florql_cli("record", "--store", str(tmp_path / "st"), str(script), FLORQL_CKPT_EVERY="")
    assert r.returncode == 0, r.stderr
    s = open_store(tmp_path / "st")
    try:
        iters = [c.meta["ctx"][0][1] for c in s.checkpoints()]
        (run,) = s.runs().values()
    finally:
        s.close()
    assert iters[0] == 0 and iters[-1] == 29 and len(iters) < 15
    assert run.end["stats"]["checkpoints"] == len(iters)
