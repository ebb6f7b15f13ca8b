"""`florql check [--repair]`: verify every byte of a store that a reader relies on; repair it.

Without `--repair` nothing is written: the store is opened tolerantly (so that a store with
damage anywhere still opens) and every problem is listed with its location; exit 1 if any.
With `--repair`, the damage is cut out (florql_storage.repair), the runs and LSN ranges lost
are listed, and the store is checked again; exit 0 when it is then clean.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from florql.errors import BadInputError


def check_main(args: Any) -> int:
    """`florql check [--store DIR] [--repair]`."""
    from florql_storage import Store

    if not os.path.isdir(args.store):
        raise BadInputError(f"no store at {args.store}; pass --store DIR")
    if getattr(args, "repair", False):
        return _repair(args.store)
    from florql_storage.losses import runs_hit

    store = Store.open(args.store, create=False, allow_damage=True)
    try:
        problems = store.check()
        holes = store.holes()
        lost = runs_hit(store, store.damage()) if store.damage() else []
    finally:
        store.close()
    for p in problems:
        print(
            f"{p.kind}: segment {p.segment} offset {p.offset} lsn {p.lsn}: {p.message}",
            file=sys.stderr,
        )
    _print_holes(holes)
    for rng, hit in lost:
        who = "; ".join(f"{rid}: {what}" for rid, what in sorted(hit.items()))
        print(f"lost: {rng.describe()}" + (f"; runs: {who}" if who else ""), file=sys.stderr)
    if problems:
        print(
            f"florql: {len(problems)} problem(s) found in {args.store}; `florql check --repair` "
            "keeps what is intact (README: Damage)",
            file=sys.stderr,
        )
        return 1
    print(f"florql: {args.store} is clean", file=sys.stderr)
    return 0


def _repair(path: str) -> int:
    from florql_storage import Store
    from florql_storage.repair import repair

    report = repair(os.path.abspath(path))
    for line in report.lines():
        print(f"florql: {line}", file=sys.stderr)
    store = Store.open(path, create=False)
    try:
        problems = store.check()
    finally:
        store.close()
    for p in problems:
        print(f"{p.kind}: {p.message}", file=sys.stderr)
    if problems:
        print(f"florql: {path} still has {len(problems)} problem(s) after repair", file=sys.stderr)
        return 1
    what = "repaired" if report.found_damage else "had nothing to repair"
    print(f"florql: {path} {what}; it is clean", file=sys.stderr)
    return 0


def _print_holes(holes: list) -> None:
    for h in holes:
        print(f"note: repaired earlier: {h.describe()}", file=sys.stderr)
