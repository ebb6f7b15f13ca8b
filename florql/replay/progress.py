"""A one-line progress bar on stderr: iterations done, time spent, time left.

It draws only when enabled (by default: when stderr is a terminal), redraws at most every
`interval` seconds, and never prompts. Time left extrapolates the rate so far; before the first
iteration it counts down from the planner's estimate.

>>> import io
>>> out = io.StringIO()
>>> p = Progress(4, estimate=8.0, stream=out, enabled=True, clock=iter([0.0, 1.0, 2.0, 2.0]).__next__)
>>> p.update(1); p.update(2); p.close()
>>> lines = out.getvalue().split("\\r")
>>> lines[1]
'replay [#####...............]   1/4 iterations  1.0s spent  ~3.0s left'
>>> lines[-1]
'replay [##########..........]   2/4 iterations  2.0s spent  ~2.0s left\\n'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 20


class Progress:
    """Shows `done / total` iterations; `update(done)` redraws, `close()` ends the line."""

    def __init__(
        self,
        total: int,
        estimate: float = 0.0,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 0)
        self.estimate = estimate
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = isatty() if enabled is None else enabled
        self.interval = interval
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._drawn_at: float | None = None

    def update(self, done: int, force: bool = False) -> None:
        self.done = min(max(done, self.done), self.total)
        if not self.enabled:
            return
        now = self.clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        self.stream.write("\r" + self.line(now))
        self.stream.flush()

    def line(self, now: float) -> str:
        spent = now - self.start
        if self.done and self.total:
            left = spent / self.done * (self.total - self.done)
        else:
            left = max(self.estimate - spent, 0.0)
        filled = WIDTH * self.done // self.total if self.total else WIDTH
        bar = "#" * filled + "." * (WIDTH - filled)
        width = len(str(self.total))
        return (
            f"replay [{bar}] {self.done:>{width + 2}}/{self.total} iterations  "
            f"{spent:.1f}s spent  ~{left:.1f}s left"
        )

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line(self.clock()) + "\n")
            self.stream.flush()
