"""Recording under plain `python train.py` (no CLI): the run ends from an exit hook that runs
before the interpreter refuses thread-pool work, so the last checkpoint is kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from florql_storage import Store

from tests.recording.recutil import child_env

TRAIN = """
import torch, florql
model = torch.nn.Linear(500, 500)          # 1 MB of state: the last write is still running at exit
opt = torch.optim.SGD(model.parameters(), lr=0.1)
florql.checkpointing(model=model, optimizer=opt)
for epoch in florql.loop("epoch", range(3)):
    for step in florql.loop("step", range(2)):
        loss = model(torch.ones(1, 500)).sum()
        opt.zero_grad(); loss.backward(); opt.step()
        florql.log("loss", loss.item())
"""


def python(tmp_path, text: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def runs_and_checkpoints(store) -> tuple[list, list]:
    st = Store.open(str(store), create=False)
    try:
        return list(st.runs().values()), [c.meta["ctx"][0][1] for c in st.checkpoints()]
    finally:
        st.close()


def test_the_checkpoint_of_the_last_epoch_is_kept_under_plain_python(tmp_path):
    r = python(tmp_path, TRAIN)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    (run,), epochs = runs_and_checkpoints(tmp_path / ".florql")
    assert run.status == "finished" and epochs == [0, 1, 2]
    assert run.end["stats"]["checkpoints"] == 3 and not run.end["stats"]["degraded"]


def test_a_script_that_raises_under_plain_python_is_failed_with_its_checkpoints(tmp_path):
    r = python(tmp_path, TRAIN + "raise RuntimeError('after training')\n")
    assert r.returncode == 1 and "RuntimeError: after training" in r.stderr
    (run,), epochs = runs_and_checkpoints(tmp_path / ".florql")
    assert run.status == "failed" and "after training" in run.end["error"]
    assert epochs == [0, 1, 2]


def test_a_store_that_cannot_be_created_under_plain_python_is_one_sentence_and_training_goes_on(
    tmp_path,
):
    (tmp_path / "afile").write_text("not a folder")
    r = python(
        tmp_path,
        "import florql\nprint(florql.log('x', 1))\n",
        FLORQL_STORE=str(tmp_path / "afile"),
    )
    assert r.returncode == 0 and r.stdout == "1\n"
    assert r.stderr.startswith("florql: error: this run is not recorded: ")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_a_refused_value_under_plain_python_does_not_silence_the_rest_of_the_run(tmp_path):
    r = python(
        tmp_path,
        """
        import numpy as np, florql
        for epoch in florql.loop("epoch", range(3)):
            florql.log("x", epoch)
            try:
                florql.log("z", np.complex64(1 + 2j))  # refused at the call
            except TypeError as e:
                print(e)
            florql.log("y", 10 * epoch)
        """,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("florql.log('z', ...): cannot log a value of type complex64") == 3
    st = Store.open(str(tmp_path / ".florql"), create=False)
    try:
        (run,) = st.runs().values()
        values = [(rec.body[2], rec.body[3]) for rec in st.scan(kinds=[3])]
    finally:
        st.close()
    assert values == [("x", 0), ("y", 0), ("x", 1), ("y", 10), ("x", 2), ("y", 20)]
    assert run.status == "finished" and run.end["stats"]["values"] == 6
