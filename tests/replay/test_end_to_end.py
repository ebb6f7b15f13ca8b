"""Hindsight replay end to end, checked against a full re-run of the new code (the oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from florql.errors import ReplayError
from florql.replay import hindsight
from florql.replay.predicate import parse_where
from tests.replay.conftest import (
    V1,
    Recorded,
    checkpoint_iterations,
    florql_cli,
    record,
    runs,
    v2,
    values,
)

ALL = parse_where(None)
STEP_NAMES = {"gnorm"}
EPOCH_NAMES = {"wnorm", "running2"}


def _ensure(store, names: list[str], selection, script_path: str, workers: int = 1):
    """Replay `names` for `selection` with the current script, quietly, as the tests all do."""
    return hindsight.ensure(
        str(store), names, selection, workers=workers, progress=False, script=script_path
    )


def _replayed(r: Recorded, names: set[str]) -> dict:
    return values(r.store, r.run_id, names, replayed=True)


def _only(d: dict, epochs: set[int]) -> dict:
    return {k: v for k, v in d.items() if k[1] and k[1][0][1] in epochs}


@pytest.mark.parametrize("warm_seconds", ["120", "0"], ids=["warm-workers", "fresh-workers"])
def test_hindsight_values_equal_a_full_rerun_of_the_new_code(
    fresh, script, oracle, warm_seconds, monkeypatch
) -> None:
    # Forked from the warm server (the default) or fresh interpreters: the same exact values.
    monkeypatch.setenv("FLORQL_WARM_SECONDS", warm_seconds)
    report = _ensure(fresh.store, ["gnorm", "wnorm", "running2"], ALL, script(v2()), workers=2)
    assert report.unresolved == set() and not report.diverged
    got = _replayed(fresh, STEP_NAMES | EPOCH_NAMES)
    want = {k: v for k, v in oracle.items() if k[0] in STEP_NAMES | EPOCH_NAMES}
    assert len(want) == 6 * 4 + 6 * 2
    assert got == want  # exact: same seed, CPU
    # Fidelity: the recomputed loss of every executed step matched the recording.
    assert (
        report.fidelity["checked"] >= 6 * 4
        and report.fidelity["matched"] == report.fidelity["checked"]
    )


def test_where_epoch_selects_only_those_iterations(fresh, script, oracle) -> None:
    report = _ensure(fresh.store, ["gnorm"], parse_where("epoch > 3"), script(v2(epoch=False)))
    assert report.executed == {fresh.run_id: [4, 5]}
    got = _replayed(fresh, STEP_NAMES)
    assert got == _only({k: v for k, v in oracle.items() if k[0] == "gnorm"}, {4, 5})


def test_per_epoch_statement_skips_every_inner_loop_and_still_matches(
    fresh, script, oracle
) -> None:
    # running2 depends on `running`, which only the skipped inner loop computes.
    report = _ensure(fresh.store, ["wnorm", "running2"], ALL, script(v2(step=False)), workers=2)
    assert report.executed == {fresh.run_id: []} and report.inner_iterations == 0
    assert report.iterations == 6
    got = _replayed(fresh, EPOCH_NAMES)
    assert got == {k: v for k, v in oracle.items() if k[0] in EPOCH_NAMES}


def test_two_workers_store_the_same_values_as_one(
    recorded: Recorded, tmp_path: Path, script
) -> None:
    a, b = recorded.copy(tmp_path / "a"), recorded.copy(tmp_path / "b")
    current = script(v2())
    ra = _ensure(a.store, ["gnorm", "wnorm"], parse_where("epoch >= 2"), current)
    rb = _ensure(b.store, ["gnorm", "wnorm"], parse_where("epoch >= 2"), current, workers=2)
    assert (ra.tasks, rb.tasks) == (1, 2)
    assert _replayed(a, {"gnorm", "wnorm"}) == _replayed(b, {"gnorm", "wnorm"})
    assert len(_replayed(a, {"gnorm"})) == 4 * 4


def test_a_second_identical_request_replays_nothing(fresh, script) -> None:
    current = script(v2())
    first = _ensure(fresh.store, ["wnorm"], parse_where("epoch < 2"), current)
    again = _ensure(fresh.store, ["wnorm"], parse_where("epoch < 2"), current)
    assert first.tasks == 1 and again.tasks == 0 and again.replayed_values == 0
    wider = hindsight.plan(str(fresh.store), ["wnorm"], parse_where("epoch < 4"), 1, script=current)
    assert wider.plan.runs[0].selected == [2, 3]  # only what is not stored yet


def test_run_filter_replays_only_that_run(fresh, script) -> None:
    other = record(fresh.project, fresh.store, V1, "--arg", "lr=0.05", name="train.py")
    report = _ensure(fresh.store, ["wnorm"], parse_where(f"run_id = '{other}'"), script(v2()))
    assert report.runs == [other]
    assert values(fresh.store, fresh.run_id, {"wnorm"}) == {}
    assert len(values(fresh.store, other, {"wnorm"})) == 6


def test_a_name_no_code_logs_is_unresolved_not_an_error(fresh, script) -> None:
    report = _ensure(fresh.store, ["nope"], ALL, script(v2()))
    assert report.unresolved == {"nope"} and report.tasks == 0


def test_unplaceable_statement_is_a_replay_error_naming_the_line(fresh, script) -> None:
    bad = v2(step=False, epoch=False).replace(
        "        running += loss.item()\n", '        florql.log("r", loss.item())\n'
    )
    with pytest.raises(ReplayError, match=r"train.py line 2\d: .*ambiguous"):
        _ensure(fresh.store, ["r"], ALL, script(bad))


def test_explain_describes_the_plan_before_anything_runs(fresh, script) -> None:
    p = hindsight.plan(
        str(fresh.store), ["gnorm"], parse_where("epoch > 3"), 2, script=script(v2())
    )
    text = p.describe()
    assert f"run {fresh.run_id}: 2 of 6 epoch iterations selected" in text
    assert "2 iterations executed (8 inner iterations)" in text and "estimate:" in text
    assert values(fresh.store, fresh.run_id, {"gnorm"}) == {}  # nothing ran


def test_no_checkpoints_falls_back_to_the_start_with_a_warning(tmp_path: Path, script) -> None:
    project = tmp_path / "p"
    project.mkdir()
    plain = V1.replace("florql.checkpointing(model=model, optimizer=opt)\n", "")
    run_id = record(project, project / ".florql", plain)
    report = _ensure(
        project / ".florql", ["wnorm"], parse_where("epoch = 2"), script(v2(step=False, base=plain))
    )
    assert any("no checkpoint" in w for w in report.warnings)
    assert report.executed == {run_id: [0, 1, 2]}
    assert not report.diverged


NOISY = V1.replace(
    '        florql.log("loss", loss.item())\n',
    '        florql.log("loss", loss.item())\n'
    "        random.seed(time.time_ns())\n"
    '        florql.log("noise", random.random())\n',
)


def test_non_deterministic_code_is_caught_and_reported(tmp_path: Path, script, capsys) -> None:
    project = tmp_path / "p"
    project.mkdir()
    run_id = record(project, project / ".florql", NOISY)
    report = _ensure(
        project / ".florql",
        ["gnorm"],
        parse_where("epoch = 1"),
        script(v2(epoch=False, base=NOISY)),
    )
    assert report.diverged
    mismatch = report.fidelity["first_mismatch"]
    assert mismatch["name"] in {"noise", "loss"}
    assert "diverged" in capsys.readouterr().err
    # The REPLAY_END record keeps the verdict, so a later request warns without replaying.
    again = _ensure(
        project / ".florql",
        ["gnorm"],
        parse_where("epoch = 1"),
        script(v2(epoch=False, base=NOISY)),
    )
    assert again.tasks == 0 and any("diverged" in w for w in again.warnings)
    assert run_id in report.runs


def test_progress_when_asked_and_other_edits_are_reported(
    fresh, script, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("FLORQL_PROGRESS", "1")
    edited = v2(step=False) + 'print("a line the recorded run never had")\n'
    report = _ensure(fresh.store, ["wnorm"], ALL, script(edited))
    err = capsys.readouterr().err
    assert "replay [" in err and "6/6 iterations" in err
    assert any("print(" in e for e in report.other_edits)
    # Before running, the edits left out are shown as a diff from the current code (issue 11).
    assert "other edit(s) of the script are not replayed" in err
    assert err.index("other edit(s)") < err.index("replay [")  # said before anything runs
    assert '-print("a line the recorded run never had")' in err
    assert "+++ train.py (what the replay runs)" in err
    described = hindsight.plan(
        str(fresh.store), ["running2"], ALL, script=script(edited)
    ).describe()
    assert '  -print("a line the recorded run never had")' in described
    assert "_replay_rest_unneeded" not in described  # florql's own guard is not the user's code


EVAL_V1 = V1.replace(
    '    florql.log("epoch_loss", running)\n',
    "    with torch.no_grad():\n"
    "        for x, y in data:\n"
    "            ev = ((model(x) - y) ** 2).mean().item()\n"
    '    florql.log("epoch_loss", running)\n',
)
EVAL_V2 = EVAL_V1.replace(
    "            ev = ((model(x) - y) ** 2).mean().item()\n",
    "            ev = ((model(x) - y) ** 2).mean().item()\n"
    '            florql.log("eval_batch", ev)\n',
)


def test_statement_in_an_evaluation_loop_after_training_skips_training(
    tmp_path: Path, script
) -> None:
    project, oracle_dir = tmp_path / "p", tmp_path / "o"
    project.mkdir()
    oracle_dir.mkdir()
    run_id = record(project, project / ".florql", EVAL_V1)
    oracle_id = record(oracle_dir, oracle_dir / ".florql", EVAL_V2)
    report = _ensure(project / ".florql", ["eval_batch"], ALL, script(EVAL_V2))
    assert report.executed == {run_id: []} and report.inner_iterations == 0
    got = values(project / ".florql", run_id, {"eval_batch"}, replayed=True)
    assert got == values(oracle_dir / ".florql", oracle_id, {"eval_batch"})
    assert sum(len(v) for v in got.values()) == 6 * 4


def test_a_killed_worker_keeps_whole_iterations_and_a_retry_fills_only_the_rest(
    fresh, script
) -> None:
    killer = V1.replace(
        '    florql.log("epoch_loss", running)\n',
        '    florql.log("epoch_loss", running)\n'
        '    florql.log("k", __import__("os").kill(__import__("os").getpid(), 9) if epoch == 3 else epoch)\n',
    )
    with pytest.raises(ReplayError, match="failed"):
        _ensure(fresh.store, ["k"], ALL, script(killer))
    stored = values(fresh.store, fresh.run_id, {"k"}, replayed=True)
    assert sorted(v[0] for v in stored.values()) == [0, 1, 2]  # nothing of epoch 3
    fixed = killer.replace(
        '__import__("os").kill(__import__("os").getpid(), 9) if epoch == 3 else epoch', "epoch"
    )
    report = _ensure(fresh.store, ["k"], ALL, script(fixed))
    assert report.iterations == 3
    stored = values(fresh.store, fresh.run_id, {"k"}, replayed=True)
    assert sorted(v for vs in stored.values() for v in vs) == [0, 1, 2, 3, 4, 5]  # no duplicates


FINAL_STMT = '\nflorql.log("final_w", float(sum(p.detach().norm() for p in model.parameters())))\n'


def test_statements_inside_and_after_the_outer_loop_replay_together(
    fresh, script, tmp_path: Path
) -> None:
    # One request for a per-step name and a name logged once after training: the per-step
    # one replays first, the final one in a second pass; both equal a full re-run.
    text = v2(epoch=False) + FINAL_STMT
    oracle_dir = tmp_path / "o"
    oracle_dir.mkdir()
    oracle_id = record(oracle_dir, oracle_dir / ".florql", text)
    want = values(oracle_dir / ".florql", oracle_id, {"gnorm", "final_w"})
    report = _ensure(fresh.store, ["gnorm", "final_w"], ALL, script(text))
    assert report.unresolved == set() and not report.diverged
    assert any("second pass" in w for w in report.warnings)
    got = _replayed(fresh, {"gnorm", "final_w"})
    assert got == want
    assert [k for k in got if k[0] == "final_w"] == [("final_w", ())]  # once, outside the loop
    # Both are stored now: asking again replays nothing.
    again = _ensure(fresh.store, ["gnorm", "final_w"], ALL, script(text))
    assert again.tasks == 0


LOSS_LINE = '        florql.log("loss", loss.item())\n'


def test_an_inner_loop_left_by_break_is_checkpointed_and_replays_exactly(
    tmp_path: Path, script
) -> None:
    # Early stopping inside the epoch: the checkpoint is taken where the loop was left, written
    # once the epoch goes on normally, and replay skips or re-executes from it as usual.
    base = V1.replace(LOSS_LINE, LOSS_LINE + "        if step == 2:\n            break\n")
    project, oracle_dir = tmp_path / "p", tmp_path / "o"
    project.mkdir()
    oracle_dir.mkdir()
    store = project / ".florql"
    run_id = record(project, store, base)
    assert checkpoint_iterations(store, run_id) == list(range(6))
    new = v2(base=base)
    oracle_id = record(oracle_dir, oracle_dir / ".florql", new)
    want = values(oracle_dir / ".florql", oracle_id, STEP_NAMES | EPOCH_NAMES)
    per_epoch = _ensure(store, ["wnorm", "running2"], ALL, script(new))
    assert per_epoch.executed == {run_id: []}  # every epoch restored, no inner loop re-run
    per_step = _ensure(store, ["gnorm"], parse_where("epoch >= 3"), script(new))
    assert per_step.executed == {run_id: [3, 4, 5]}
    got = _replayed(Recorded(project, store, run_id), STEP_NAMES | EPOCH_NAMES)
    assert got == {k: v for k, v in want.items() if k[0] != "gnorm" or k[1][0][1] >= 3}
    assert len([k for k in got if k[0] == "gnorm"]) == 3 * 3  # three steps before the break


def test_an_iteration_that_fails_inside_its_inner_loop_is_not_checkpointed(
    tmp_path: Path,
) -> None:
    crash = "        if epoch == 2 and step == 1:\n            raise RuntimeError('boom')\n"
    project = tmp_path / "p"
    project.mkdir()
    (project / "train.py").write_text(V1.replace(LOSS_LINE, LOSS_LINE + crash))
    done = florql_cli(
        "record", "--store", str(project / ".florql"), "--overhead", "1.0", "train.py",
        cwd=project,
    )  # fmt: skip
    assert done.returncode == 1 and "boom" in done.stderr
    (run_id,) = runs(project / ".florql")
    assert checkpoint_iterations(project / ".florql", run_id) == [0, 1]


def _raw(r: Recorded, name: str) -> list:
    """Every stored VALUE record of `name` in the run, duplicates included."""
    return [v for vs in values(r.store, r.run_id, {name}).values() for v in vs]


def test_a_stored_replayed_value_is_never_written_again_nor_replaced(fresh, script) -> None:
    # Invariant 7: `wnorm` replayed for epochs < 2, then the user edits its statement (now a
    # different value) and asks for it with a new name over every epoch. The earlier values
    # stay the ones `logs` shows, stored once; the difference is reported.
    first = _ensure(fresh.store, ["wnorm"], parse_where("epoch < 2"), script(v2(step=False)))
    assert first.replayed_values == 2
    before = values(fresh.store, fresh.run_id, {"wnorm"})
    edited = v2(step=False).replace(
        '    florql.log("wnorm", float(sum(p.detach().norm() ** 2 for p in model.parameters())))\n',
        '    florql.log("wnorm", 2 * float(sum(p.detach().norm() ** 2 for p in model.parameters())))\n'
        '    florql.log("w3", 3.0)\n',
    )
    report = _ensure(fresh.store, ["wnorm", "w3"], ALL, script(edited))
    after = values(fresh.store, fresh.run_id, {"wnorm"})
    assert len(_raw(fresh, "wnorm")) == 6  # two kept, four new: none written twice
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(_raw(fresh, "w3")) == 6
    assert any("the stored value is kept" in w for w in report.warnings)


def test_verify_re_executes_a_sample_in_full_and_finds_a_changed_statement(fresh, script) -> None:
    current = script(v2(step=False))
    report = hindsight.ensure(str(fresh.store), ["wnorm"], ALL, 1, False, script=current, verify=2)
    v = report.verified
    assert v is not None and v.iterations == 2 and v.executed == {fresh.run_id: [2, 5]}
    assert v.fidelity["checked"] > 0 and v.fidelity["matched"] == v.fidelity["checked"]
    assert v.conflicts == 0 and not report.diverged
    before = values(fresh.store, fresh.run_id, {"wnorm"})
    # The statement changes; verification recomputes it and says the stored values differ.
    changed = script(v2(step=False).replace('florql.log("wnorm", ', 'florql.log("wnorm", 1 + '))
    again = hindsight.ensure(str(fresh.store), ["wnorm"], ALL, 1, False, script=changed, verify=1)
    assert again.replayed_values == 0 and again.verified.conflicts == 1 and again.diverged
    assert values(fresh.store, fresh.run_id, {"wnorm"}) == before  # nothing replaced


COUNTER_V1 = V1.replace(
    "florql.checkpointing(model=model, optimizer=opt)\n",
    "florql.checkpointing(model=model, optimizer=opt)\n"
    "class Counter:\n"
    "    def __init__(self):\n"
    "        self.n, self.sink = 0, open(__import__('os').devnull, 'w')\n"
    "    def tick(self):\n"
    "        self.n += 1\n"
    "        return self.n\n"
    "counter = Counter()\n",
).replace(
    '    florql.log("epoch_loss", running)\n',
    '    florql.log("epoch_loss", running)\n    florql.log("tick", counter.tick())\n',
)


def test_divergence_names_the_state_no_checkpoint_could_hold(tmp_path: Path, script) -> None:
    project = tmp_path / "p"
    project.mkdir()
    run_id = record(project, project / ".florql", COUNTER_V1)
    current = script(
        COUNTER_V1.replace(
            '    florql.log("tick", counter.tick())\n',
            '    florql.log("tick", counter.tick())\n    florql.log("w", 1.0)\n',
        )
    )
    plan = hindsight.plan(
        str(project / ".florql"), ["w"], parse_where("epoch >= 3"), 1, script=current
    )
    assert "counter (Counter)" in plan.describe()
    report = _ensure(project / ".florql", ["w"], parse_where("epoch >= 3"), current)
    assert report.diverged and report.fidelity["first_mismatch"]["name"] == "tick"
    assert any("state no checkpoint holds: counter (Counter)" in w for w in report.warnings)
    assert values(project / ".florql", run_id, {"w"}, replayed=True)  # stored, marked


PID_TAIL_V1 = """\
import os
import random

import torch

import florql

w = torch.zeros(1)
florql.checkpointing(w=w)
for epoch in florql.loop("epoch", range(4)):
    for step in florql.loop("step", range(3)):
        x = random.random()
        florql.log("x", x)
    for _ in range(os.getpid() % 1000 + 1):  # a tail whose draws no replay repeats
        random.random()
"""


def test_every_iteration_starts_from_the_random_state_it_was_recorded_with(
    tmp_path: Path, script
) -> None:
    # Replaying epoch 3 runs epoch 2's tail (its draws depend on the process) and then
    # epoch 3 from the RNG state epoch 3 was recorded with, not the one the tail left.
    project = tmp_path / "p"
    project.mkdir()
    run_id = record(project, project / ".florql", PID_TAIL_V1)
    v2 = PID_TAIL_V1.replace('        florql.log("x", x)\n',
                             '        florql.log("x", x)\n        florql.log("x2", x * 2)\n')  # fmt: skip
    report = _ensure(project / ".florql", ["x2"], parse_where("epoch = 3"), script(v2))
    assert 3 in report.executed[run_id] and not report.diverged
    recorded = values(project / ".florql", run_id, {"x"}, replayed=False)
    got = values(project / ".florql", run_id, {"x2"}, replayed=True)
    assert got and all(v == [2 * recorded[("x", ctx)][0]] for (_, ctx), v in got.items())


AUX_V1 = V1.replace(
    "florql.checkpointing(model=model, optimizer=opt)\n",
    "florql.checkpointing(model=model, optimizer=opt)\n"
    "aux = torch.nn.Linear(4, 1)  # a second model nobody registered\n"
    "aux_opt = torch.optim.SGD(aux.parameters(), lr=0.05)\n",
).replace(
    "        opt.step()\n",
    "        opt.step()\n"
    "        aux_opt.zero_grad()\n"
    "        ((aux(x) - y) ** 2).mean().backward()\n"
    "        aux_opt.step()\n",
)


def test_an_unregistered_models_weights_and_gradients_are_restored(tmp_path: Path, script) -> None:
    project, oracle_dir = tmp_path / "p", tmp_path / "o"
    project.mkdir()
    oracle_dir.mkdir()
    new = (
        '    florql.log("aux_w", float(aux.weight.detach().sum()))\n'
        '    florql.log("aux_g", float(aux.weight.grad.norm()))\n'
    )
    assert "aux_opt.step()" in AUX_V1
    v2 = AUX_V1.replace(
        '    florql.log("epoch_loss", running)\n', '    florql.log("epoch_loss", running)\n' + new
    )
    run_id = record(project, project / ".florql", AUX_V1)
    oracle_id = record(oracle_dir, oracle_dir / ".florql", v2)
    report = _ensure(project / ".florql", ["aux_w", "aux_g"], parse_where("epoch >= 3"), script(v2))
    assert not report.diverged
    got = values(project / ".florql", run_id, {"aux_w", "aux_g"}, replayed=True)
    want = values(oracle_dir / ".florql", oracle_id, {"aux_w", "aux_g"})
    assert got and got == {k: v for k, v in want.items() if k[1][0][1] >= 3}
