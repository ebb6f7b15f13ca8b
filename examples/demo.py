"""`make demo`: record the example training run, then answer a hindsight query.

1. Copies examples/train_cnn.py to `./demo-work/train.py` (the user's script) and records it
   into a fresh store `./demo-store` through the command line (`python -m florql record ...`).
2. Shows what was stored: the run, its values, its checkpoints.
3. Edits the script as a user would, after the fact: a per-epoch `weight_norm` after the step
   loop and a per-step `grad_norm` inside it; then asks for them in SQL. florql finds the new
   statements, replays only the epochs the WHERE clause selects from checkpoints, and answers.
4. Writes a chart of the curves (`florql plot`) and says how to open the web view (`florql ui`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORE = Path.cwd() / "demo-store"
WORK = Path.cwd() / "demo-work"
SCRIPT = WORK / "train.py"

# The statements a user adds after training (anchored on lines the example already has).
NEW_STATEMENTS = [
    (
        '        florql.log("loss", loss.item())\n',
        '        florql.log("grad_norm", torch.norm(torch.stack([p.grad.norm() for p in '
        "model.parameters()])).item())\n",
    ),
    (
        '    florql.log("train_loss", running / len(train_loader))\n',
        '    florql.log("weight_norm", torch.norm(torch.stack([p.norm() for p in '
        "model.parameters()])).item())\n",
    ),
]


def florql(*args: str) -> None:
    """Run `python -m florql ARGS`, echoing the command; stop the demo if it fails."""
    print(f"\n$ florql {' '.join(args)}", flush=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    r = subprocess.run([sys.executable, "-m", "florql", *args], env=env, cwd=WORK)
    if r.returncode != 0:
        sys.exit(r.returncode)


def fresh_store() -> None:
    if STORE.exists():
        if not (STORE / "MANIFEST").exists():
            sys.exit(f"{STORE} exists and is not a florql store; move it away first")
        shutil.rmtree(STORE)
    WORK.mkdir(exist_ok=True)
    shutil.copyfile(REPO / "examples" / "train_cnn.py", SCRIPT)


def add_statements() -> None:
    """Edit the recorded script as a user would: insert each new line after its anchor."""
    text = SCRIPT.read_text()
    for anchor, line in NEW_STATEMENTS:
        if text.count(anchor) != 1:
            sys.exit(f"demo: cannot find where to add {line.strip()!r} in {SCRIPT}")
        text = text.replace(anchor, anchor + line)
        print(f"  + {line.strip()}")
    SCRIPT.write_text(text)


def show_store() -> None:
    sys.path.insert(0, str(REPO))
    from florql_storage import Store, kinds

    store = Store.open(str(STORE), create=False)
    try:
        for run_id, run in store.runs().items():
            stats = run.end["stats"]
            names = Counter(
                r.body[2] for r in store.scan(kinds=[kinds.VALUE], run_id=run_id) if not r.body[6]
            )
            print(f"\nrun {run_id} ({run.status}), args {run.meta['args']}")
            print(
                f"  {stats['values']} values: " + ", ".join(f"{n} x{c}" for n, c in names.items())
            )
            print(f"  measured recording overhead: {100 * stats['overhead']:.1f}% of wall time")
            print("  checkpoints (taken where each epoch's step loop ends):")
            for c in store.checkpoints(run_id):
                epoch = c.meta["ctx"][0][2]
                print(
                    f"    epoch {epoch:>2}  {c.ckpt_id}  raw {c.raw_bytes / 1e6:5.2f} MB  "
                    f"stored {c.stored_bytes / 1e6:5.2f} MB  write {1000 * c.write_seconds:5.1f} ms"
                )
            raw, stored = stats["raw_bytes"], stats["stored_bytes"]
            print(f"  stored/raw over the run: {stored / max(raw, 1):.2f}")
    finally:
        store.close()


def main() -> None:
    fresh_store()
    florql("record", "--store", str(STORE), "train.py")
    florql("runs", "--store", str(STORE))
    show_store()
    print(f"\nLater, the user wishes they had logged more and edits {SCRIPT.name}:")
    add_statements()
    per_epoch = "SELECT epoch, accuracy, weight_norm FROM logs WHERE weight_norm IS NOT NULL"
    florql("explain", "--store", str(STORE), per_epoch)
    florql("query", "--store", str(STORE), per_epoch)
    per_step = (
        "SELECT epoch, count(*) AS steps, avg(grad_norm) AS mean_grad_norm, "
        "max(grad_norm) AS max_grad_norm FROM logs WHERE epoch >= 6 AND grad_norm IS NOT NULL "
        "GROUP BY epoch ORDER BY epoch"
    )
    florql("query", "--store", str(STORE), per_step)
    print("\nAsked again, the same query replays nothing: the values are stored.")
    florql("query", "--store", str(STORE), "--no-replay", per_step)
    chart = Path.cwd() / "demo-curves.png"
    florql("plot", "--store", str(STORE), "loss", "accuracy", "grad_norm", "-o", str(chart))
    print(f"\nWrote {chart}: loss, accuracy and the replayed grad_norm, per run.")
    print(f"To look around in a browser (runs, charts, SQL, hindsight): florql ui --store {STORE}")
    print("It prints a local URL with a token; open that URL.")


if __name__ == "__main__":
    main()
