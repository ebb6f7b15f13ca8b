"""Run every benchmark in bench/ in turn (`make bench`).

Each bench_*.py prints its own table with a baseline measured in the same run; dated results
are kept in bench/RESULTS.md. Extra arguments are passed to every script (e.g. `--quick`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ORDER = ["bench_storage.py", "bench_record.py", "bench_query.py", "bench_replay.py", "bench_ui.py"]


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = [here / name for name in ORDER if (here / name).exists()]
    failed = 0
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *argv])
        print(f"--- {script.name}: exit {rc}, {time.perf_counter() - start:.1f} s", flush=True)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
