"""A writer process for the multi-process tests (not a test module).

usage: python _writer_child.py STORE RUN_ID N [PER_FLUSH] [CKPT_EVERY]
Appends VALUE records [run_id, i, ...] for i in range(N), flushing every PER_FLUSH records and
printing "LSN I" after each flush returns (so the parent knows what is durable). Exits 0.
"""

from __future__ import annotations

import sys

from florql_storage import Store, kinds


def main() -> None:
    root, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_flush = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    ckpt_every = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    store = Store.open(root)
    w = store.writer()
    w.begin_run(run_id, {"script": "child"})
    for i in range(n):
        w.append(kinds.VALUE, [run_id, i, "x", float(i), [], 0.0, ""])
        if i % per_flush == per_flush - 1:
            lsn = w.flush()
            print(lsn, i, flush=True)
        if ckpt_every and i % ckpt_every == ckpt_every - 1:
            w.write_checkpoint(run_id, {"i": i}, [i.to_bytes(4, "little") * 5000])
            print(store.last_lsn, i, "ckpt", flush=True)
    w.end_run(run_id, "finished", {})
    print("done", flush=True)


if __name__ == "__main__":
    main()
