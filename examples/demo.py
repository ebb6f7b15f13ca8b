"""`make demo`: record the example training run, then show what florql stored.

Records examples/train_cnn.py into a fresh store `./demo-store` through the command line
(`python -m florql record ...`), then lists the run, its logged values and its checkpoints.
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


def florql(*args: str) -> None:
    """Run `python -m florql ARGS`, echoing the command; stop the demo if it fails."""
    print(f"\n$ florql {' '.join(args)}", flush=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    r = subprocess.run([sys.executable, "-m", "florql", *args], env=env, cwd=REPO)
    if r.returncode != 0:
        sys.exit(r.returncode)


def fresh_store() -> None:
    if STORE.exists():
        if not (STORE / "MANIFEST").exists():
            sys.exit(f"{STORE} exists and is not a florql store; move it away first")
        shutil.rmtree(STORE)


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
    florql("record", "--store", str(STORE), "examples/train_cnn.py")
    florql("runs", "--store", str(STORE))
    show_store()


if __name__ == "__main__":
    main()
