"""The replay-task runtime (docs/INTERFACES.md §3) against a recorded run of the example.

Oracle: the values the recorded run logged. A replay that restores a checkpoint and skips the
inner loop must reproduce the per-epoch values exactly with no inner iteration executed; one that
re-executes an epoch must reproduce its step losses exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from florql_storage import Store, kinds

from florql.replay.task import run_task
from tests.recording.recutil import EPOCHS, STEPS, child_env


@pytest.fixture()
def store(recorded, tmp_path):
    """A private copy of the recorded store (replays append to it)."""
    path = tmp_path / "st"
    shutil.copytree(recorded["store"], path)
    return str(path)


def checkpoints(store, run_id):
    s = Store.open(store, create=False)
    try:
        return {c.meta["ctx"][0][1]: c.ckpt_id for c in s.checkpoints(run_id)}
    finally:
        s.close()


def task(store, recorded, steps, tmp_path, **extra):
    s = Store.open(store, create=False)
    try:
        meta = s.runs()[recorded["run_id"]].meta
    finally:
        s.close()
    t = {
        "replay_id": "rp-test",
        "run_id": recorded["run_id"],
        "store": store,
        "script": meta["script"],
        "cwd": meta["cwd"],
        "argv": meta["argv"],
        "args": meta["args"],
        "steps": steps,
        "run_to_end": False,
        "new_names": [],
        "check_names": [],
        "tolerance": 0.0,
        "result_path": str(tmp_path / "result.json"),
    }
    t.update(extra)
    return t


def replayed(store, replay_id="rp-test"):
    s = Store.open(store, create=False)
    try:
        return [r.body for r in s.scan(kinds=[kinds.VALUE]) if r.body[6] == replay_id]
    finally:
        s.close()


def recorded_of(recorded, name):
    return [(v[3], v[2]) for v in recorded["values"] if v[1] == name]


def test_skip_inner_reproduces_per_epoch_values_without_running_a_step(recorded, store, tmp_path):
    ck = checkpoints(store, recorded["run_id"])
    steps = [{"iteration": e, "action": "skip_inner", "checkpoint": ck[e]} for e in (1, 2, 3)]
    # `accuracy` plays the new name, `train_loss` the checked one (it reads the script
    # variable `running` that the skipped loop left behind). The run logged `accuracy`
    # already, so each recomputed value is compared with the stored one, never written again.
    t = task(store, recorded, steps, tmp_path, new_names=["accuracy"], check_names=["train_loss"])
    result = run_task(t)
    assert "error" not in result
    assert result["inner_iterations"] == 0 and result["executed"] == [1, 2, 3]
    assert result["fidelity"] == {"checked": 3, "matched": 3, "first_mismatch": None}
    assert (result["compared"], result["conflicts"], result["values"]) == (3, 0, 0)
    assert replayed(store) == []
    assert json.loads((tmp_path / "result.json").read_text()) == result


def test_silent_tail_then_execute_reproduces_the_epochs_step_losses(recorded, store, tmp_path):
    ck = checkpoints(store, recorded["run_id"])
    steps = [
        {"iteration": 1, "action": "silent_tail", "checkpoint": ck[1]},
        {"iteration": 2, "action": "execute"},
    ]
    t = task(store, recorded, steps, tmp_path, new_names=["loss"], check_names=["loss", "accuracy"])
    result = run_task(t)
    assert result["inner_iterations"] == STEPS  # only epoch 2's steps ran
    assert result["fidelity"] == {
        "checked": STEPS + 1,
        "matched": STEPS + 1,
        "first_mismatch": None,
    }
    # `loss` plays the new name; the run logged it, so every recomputed loss is compared with
    # the stored one (equal) and none is written twice.
    assert (result["compared"], result["conflicts"], result["values"]) == (STEPS, 0, 0)
    assert replayed(store) == []


def test_execute_from_iteration_zero_replays_from_the_start(recorded, store, tmp_path):
    steps = [{"iteration": 0, "action": "execute"}, {"iteration": 1, "action": "execute"}]
    result = run_task(task(store, recorded, steps, tmp_path, check_names=["loss"]))
    assert result["executed"] == [0, 1] and result["inner_iterations"] == 2 * STEPS
    assert result["fidelity"]["checked"] == 2 * STEPS == result["fidelity"]["matched"]


def test_a_changed_value_is_reported_as_the_first_mismatch(recorded, store, tmp_path):
    ck = checkpoints(store, recorded["run_id"])
    t = task(
        store, recorded, [{"iteration": 1, "action": "skip_inner", "checkpoint": ck[1]}], tmp_path
    )
    changed = tmp_path / "train_cnn.py"
    source = Path(t["script"]).read_text()
    changed.write_text(
        source.replace("evaluate(model, test_loader))", "evaluate(model, test_loader) + 1)")
    )
    t.update(script=str(changed), check_names=["accuracy", "lr"])
    result = run_task(t)
    acc = dict(recorded_of(recorded, "accuracy"))[(("epoch", 1, 1),)]
    assert result["fidelity"] == {
        "checked": 2,
        "matched": 1,
        "first_mismatch": {
            "name": "accuracy",
            "ctx": [["epoch", 1, 1]],
            "recorded": acc,
            "replayed": acc + 1,
        },
    }


def test_script_stops_after_the_last_step_unless_run_to_end(recorded, store, tmp_path):
    ck = checkpoints(store, recorded["run_id"])
    steps = [{"iteration": 0, "action": "skip_inner", "checkpoint": ck[0]}]
    result = run_task(task(store, recorded, steps, tmp_path, new_names=["accuracy"]))
    assert result["executed"] == [0] and result["compared"] == 1
    steps = [{"iteration": 2, "action": "skip_inner", "checkpoint": ck[2]}]
    result = run_task(
        task(
            store,
            recorded,
            steps,
            tmp_path,
            new_names=["accuracy"],
            run_to_end=True,
            replay_id="rp2",
        )
    )
    assert result["executed"] == [2] and result["compared"] == 1  # iteration 3 is not run


def test_replay_writes_no_run_records_and_no_checkpoints(recorded, store, tmp_path):
    s = Store.open(store, create=False)
    before = (s.last_lsn, len(s.checkpoints()))
    s.close()
    ck = checkpoints(store, recorded["run_id"])
    t = task(
        store,
        recorded,
        [{"iteration": 3, "action": "skip_inner", "checkpoint": ck[3]}],
        tmp_path,
        new_names=["weight_norm"],
    )
    t.update(script=_with_weight_norm(t, tmp_path, guard=False))
    run_task(t)
    s = Store.open(store, create=False)
    try:
        new = [r for r in s.scan(from_lsn=before[0] + 1)]
        assert len(s.checkpoints()) == before[1]
        assert s.runs()[recorded["run_id"]].status == "finished"
    finally:
        s.close()
    assert [r.kind for r in new] == [kinds.VALUE]
    assert new[0].body[2] == "weight_norm" and new[0].body[6] == "rp-test"


def test_worker_entry_point_runs_a_task_file(recorded, store, tmp_path):
    ck = checkpoints(store, recorded["run_id"])
    t = task(
        store,
        recorded,
        [{"iteration": 1, "action": "skip_inner", "checkpoint": ck[1]}],
        tmp_path,
        check_names=["accuracy"],
    )
    path = tmp_path / "task.json"
    path.write_text(json.dumps(t))
    r = subprocess.run(
        [sys.executable, "-m", "florql.replay.worker", str(path)],
        env=child_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["fidelity"]["matched"] == 1 and result["inner_iterations"] == 0
    assert EPOCHS == 4
    bad = subprocess.run(
        [sys.executable, "-m", "florql.replay.worker", str(tmp_path / "none.json")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "cannot read replay task" in bad.stderr


def test_an_iteration_that_raises_leaves_none_of_its_values(recorded, store, tmp_path):
    ck = checkpoints(store, recorded["run_id"])
    steps = [
        {"iteration": 1, "action": "silent_tail", "checkpoint": ck[1]},
        {"iteration": 2, "action": "execute"},
    ]
    t = task(store, recorded, steps, tmp_path, new_names=["loss"])
    failing = tmp_path / "train_cnn.py"
    source = Path(t["script"]).read_text()
    anchor = '        florql.log("loss", loss.item())\n'
    assert anchor in source
    # The third step of epoch 2 raises after two of its losses were logged.
    failing.write_text(
        source.replace(
            anchor,
            anchor
            + "        if epoch == 2 and step == 2:\n            raise RuntimeError('boom')\n",
        )
    )
    t.update(script=str(failing))
    result = run_task(t)
    assert "boom" in result.get("error", "")
    assert replayed(store) == []  # epoch 2 did not finish: none of its values are visible


def _with_weight_norm(t, tmp_path, guard):
    """The example plus a per-epoch weight_norm after train_loss, with or without the guard."""
    from florql.replay.early_exit import GUARD

    source = Path(t["script"]).read_text()
    anchor = '    florql.log("train_loss", running / len(train_loader))\n'
    assert anchor in source
    line = '    florql.log("weight_norm", sum(p.norm() for p in model.parameters()).item())\n'
    script = tmp_path / ("guarded" if guard else "plain") / "train_cnn.py"
    script.parent.mkdir()
    script.write_text(
        source.replace(anchor, anchor + line + ("    " + GUARD + "\n" if guard else ""))
    )
    return str(script)


def test_early_exit_skips_the_tail_of_restored_iterations_and_keeps_their_values(
    recorded, store, tmp_path
):
    ck = checkpoints(store, recorded["run_id"])
    steps = [{"iteration": e, "action": "skip_inner", "checkpoint": ck[e]} for e in (1, 2)]
    results = {}
    stores = {False: store, True: str(tmp_path / "store-guarded")}
    shutil.copytree(store, stores[True])  # the second replay must not find the first's values
    for guard, replay_id in ((False, "rp-plain"), (True, "rp-guard")):
        t = task(
            stores[guard],
            recorded,
            steps,
            tmp_path,
            new_names=["weight_norm"],
            check_names=["accuracy"],
        )
        t.update(script=_with_weight_norm(t, tmp_path, guard), replay_id=replay_id)
        t["result_path"] = str(tmp_path / f"{replay_id}.json")
        results[guard] = run_task(t)
    plain = [(b[4], b[3]) for b in replayed(store, "rp-plain")]
    guarded = [(b[4], b[3]) for b in replayed(stores[True], "rp-guard")]
    assert guarded == plain and len(plain) == 2  # same values...
    assert results[False]["fidelity"]["checked"] == 2  # ...the plain replay evaluated each epoch,
    assert results[True]["fidelity"]["checked"] == 0  # the guarded one stopped after the value


def test_early_exit_runs_the_tail_when_the_next_iteration_continues_from_it(
    recorded, store, tmp_path
):
    ck = checkpoints(store, recorded["run_id"])
    steps = [
        {"iteration": 1, "action": "skip_inner", "checkpoint": ck[1]},
        {"iteration": 2, "action": "execute"},
    ]
    t = task(store, recorded, steps, tmp_path, new_names=["weight_norm"], check_names=["loss"])
    t.update(script=_with_weight_norm(t, tmp_path, guard=True))
    result = run_task(t)
    # Epoch 2 starts from epoch 1's tail (its scheduler step): skipping it would change the
    # learning rate and every loss of epoch 2.
    assert result["fidelity"]["checked"] == STEPS == result["fidelity"]["matched"]
