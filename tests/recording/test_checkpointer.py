"""The checkpointer: snapshot in the caller's thread, write in the background, backpressure."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch

from florql.checkpointer import POOL, Checkpointer


class SlowWriter:
    """A LogWriter stand-in whose write_checkpoint blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[tuple[dict, list[bytes]]] = []

    def write_checkpoint(self, run_id, meta, blobs):
        self.release.wait(10)
        self.written.append((meta, [bytes(b) for b in blobs]))
        return SimpleNamespace(raw_bytes=sum(len(b) for b in blobs), stored_bytes=1)


def make(writer, w):
    drained = []
    session = SimpleNamespace(
        objects={"w": w},
        run_id="r1",
        writer=writer,
        drain=lambda: drained.append(True) or True,  # True: the records are durable
        flusher=SimpleNamespace(troubled=False),
        write_lock=threading.RLock(),
    )
    ck = Checkpointer(session, budget=1.0)
    ck.policy.every = 1  # every opportunity: this test is about backpressure, not the budget
    return ck, drained


def offer(ck, i, last=False):
    return ck.offer(
        seq=i, ctx=(("epoch", i, i),), phase="inner_end", found_vars={}, iteration=i, is_last=last
    )


def test_checkpoints_are_skipped_while_the_writer_is_behind_and_the_last_one_waits():
    writer = SlowWriter()
    w = torch.zeros(4)
    ck, drained = make(writer, w)
    ck.policy.every = None  # budget mode: skip when no snapshot buffer is free
    ck.policy.budget = 1e9
    results = []
    for i in range(POOL + 2):
        w += 1
        results.append(offer(ck, i))
    assert results == [True] * POOL + [False, False] and ck.skipped == 2
    threading.Timer(0.2, writer.release.set).start()
    w += 1
    assert offer(ck, 9, last=True)  # waits for a free buffer instead of skipping
    ck.close()
    assert [m["seq"] for m, _ in writer.written] == [0, 1, 9]
    assert drained == [True, True, True]  # records made durable before each checkpoint
    values = [
        torch.frombuffer(bytearray(b[0]), dtype=torch.float32)[0].item() for _, b in writer.written
    ]
    assert values == [1.0, 2.0, 5.0]  # each snapshot is the state at its offer, not later
    assert ck.count == 3 and ck.raw_bytes == 48
