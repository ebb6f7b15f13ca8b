"""The adaptive checkpoint policy keeps its measured cost within the overhead budget."""

from __future__ import annotations

import pytest

from florql.checkpointer import Policy


def simulate(iter_seconds: float, cost: float, budget: float, n: int = 200) -> list[int]:
    """Iterations at which the policy checkpoints, given constant iteration time and cost."""
    p = Policy(budget=budget, contention=1.0)
    taken = []
    for i in range(n):
        now = i * iter_seconds
        if p.should(i, is_last=(i == n - 1), now=now):
            p.taken(stall=cost / 2, write=cost / 2, now=now)
            taken.append(i)
    return taken


def test_cheap_checkpoints_are_taken_every_iteration():
    assert simulate(iter_seconds=1.0, cost=0.005, budget=0.02) == list(range(200))


@pytest.mark.parametrize(("cost", "every"), [(0.05, 3), (0.2, 10), (1.0, 50)])
def test_expensive_checkpoints_are_spaced_to_fit_the_budget(cost, every):
    taken = simulate(iter_seconds=1.0, cost=cost, budget=0.02)
    spent = len(taken) * cost
    assert spent <= 0.02 * 200 + 2 * cost  # first (measurement) and last are extra
    gaps = {b - a for a, b in zip(taken[1:-2], taken[2:-1], strict=True)}
    assert gaps and max(gaps) <= every + 1 and min(gaps) >= every - 1


def test_first_and_last_iterations_are_always_checkpointed():
    taken = simulate(iter_seconds=0.01, cost=10.0, budget=0.02, n=50)
    assert taken[0] == 0 and taken[-1] == 49


def test_fixed_schedule_checkpoints_every_kth_iteration_whatever_the_cost():
    p = Policy(budget=0.02, contention=1.0, every=3)
    taken = []
    for i in range(10):
        if p.should(i, is_last=(i == 9), now=float(i)):
            p.taken(stall=100.0, now=float(i))
            taken.append(i)
    assert taken == [0, 3, 6, 9]


def test_background_write_is_charged_its_cpu_time_not_its_disk_wait():
    """A write that mostly waits for the disk (an fsync) takes no core from training: the policy
    is charged the writer thread's CPU time, while the wall time is still reported."""
    import threading
    import time
    from types import SimpleNamespace

    from florql.checkpointer import Checkpointer

    info = SimpleNamespace(raw_bytes=10, stored_bytes=10)

    def write_checkpoint(run_id, meta, blobs):
        time.sleep(0.3)  # waiting on the disk: no CPU
        return info

    session = SimpleNamespace(
        run_id="r",
        drain=lambda: True,  # the records before the checkpoint are durable
        write_lock=threading.RLock(),
        writer=SimpleNamespace(write_checkpoint=write_checkpoint),
    )
    ck = Checkpointer(session)
    ck.policy.contention = 1.0
    done = threading.Event()
    ck._jobs.put(({}, [], SimpleNamespace()))
    ck._jobs.put(None)
    t = threading.Thread(target=lambda: (ck._write_loop(), done.set()))
    t.start()
    assert done.wait(10)
    assert ck.count == 1 and ck.bg_seconds >= 0.3
    assert ck.bg_cpu_seconds < 0.1 and ck.policy.spent < 0.1
