"""Replay leases: one process replays a (run, name) at a time; the others wait for its values.

Two hindsight queries for the same new variable, started together, would each plan the same
iterations (neither sees the other's values yet) and both replay them: the store would hold
every value twice. So before it runs anything, a request claims a lease per (run, name) it is
about to replay: an exclusive lock on `runs/<hash>.lease` in the store folder (the folder of
the runs' liveness locks; through the store's file-system interface; the kernel drops it when its holder dies, so a killed replay
never blocks the next one). Leases are taken in sorted order (two requests never hold one
each and wait for the other's) and held until the request's REPLAY_END is written.

A request that finds a lease held says so on stderr and waits; once it holds every lease its
plan needs, it plans again if the store grew meanwhile: the other replay's values are then
stored, and the new plan asks only for what is still missing (usually nothing).

>>> from florql_storage.memfs import MemFS
>>> fs = MemFS()
>>> fs.mkdir("/s")
>>> a, b = Leases(fs, "/s"), Leases(fs, "/s")
>>> a.try_take(("r1", "grad_norm")), b.try_take(("r1", "grad_norm")), b.try_take(("r1", "acc"))
(True, False, True)
>>> a.release(); b.try_take(("r1", "grad_norm"))
True
>>> b.release()
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from florql_storage.format import RUNS_DIR

if TYPE_CHECKING:
    from florql_storage import Store

FOLDER = RUNS_DIR  # beside the runs' liveness locks: a store holds no folder it does not know
Pair = tuple[str, str]  # (run id, variable name)
P = TypeVar("P")


class Leases:
    """The replay leases one request holds on one store; a context manager releasing them."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root
        self._held: dict[Pair, Any] = {}

    def _path(self, pair: Pair) -> str:
        digest = hashlib.sha256(f"{pair[0]}\0{pair[1]}".encode()).hexdigest()[:24]
        return f"{self.root}/{FOLDER}/{digest}.lease"

    def try_take(self, pair: Pair) -> bool:
        """Take the lease on `pair` unless another request holds it."""
        return self._take(pair, blocking=False)

    def take(self, pair: Pair) -> None:
        """Take the lease on `pair`, waiting for its holder to finish."""
        self._take(pair, blocking=True)

    def _take(self, pair: Pair, blocking: bool) -> bool:
        if pair in self._held:
            return True
        if not self.fs.exists(f"{self.root}/{FOLDER}"):
            self.fs.mkdir(f"{self.root}/{FOLDER}")
        handle = self.fs.lock(self._path(pair), blocking=blocking)
        if handle is None:
            return False
        self._held[pair] = handle
        return True

    @property
    def held(self) -> set[Pair]:
        return set(self._held)

    def release(self) -> None:
        for handle in self._held.values():
            handle.release()
        self._held.clear()

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def plan_under_leases(
    store: Store, leases: Leases, make: Callable[[], P], needs: Callable[[P], Iterable[Pair]]
) -> P:
    """`make()` a plan whose every (run, name) in `needs(plan)` this request holds, and that
    was made after the last replay of those pairs by anyone else ended."""
    while True:
        store.refresh()
        lsn = store.last_lsn
        plan = make()
        missing = sorted(set(needs(plan)) - leases.held)
        if not missing:
            return plan
        for pair in missing:
            if not leases.try_take(pair):
                print(
                    f"florql: waiting for another replay of {pair[1]} in run {pair[0]} to "
                    "finish (its values will answer this query too)",
                    file=sys.stderr,
                )
                leases.take(pair)
        store.refresh()
        if store.last_lsn == lsn:  # nothing stored meanwhile: the plan stands
            return plan
