"""Script variables a skipped inner loop must leave behind: static analysis and frame writes."""

from __future__ import annotations

import sys

from florql import scriptvars

SCRIPT = """
import florql
from florql import loop
best = 0
def main():
    for epoch in florql.loop("epoch", range(3)):
        total, n = 0.0, 0
        if True:
            for i, x in loop("step", enumerate(data)):
                total += x
                n += 1
                scratch = x * 2
                last_i = i
        for j in florql.loop("eval", range(2)):
            unrelated = j
        florql.log("avg", total / n)
    print(last_i)
"""


def test_analysis_finds_names_the_inner_loop_changes_and_later_code_reads():
    assert scriptvars.analyze(SCRIPT) == ("last_i", "n", "total")


def test_analysis_without_nested_loops_or_valid_code_finds_nothing():
    assert (
        scriptvars.analyze(
            "import florql\nfor e in florql.loop('e', range(2)):\n    x = e\nprint(x)"
        )
        == ()
    )
    assert scriptvars.analyze("def broken(:\n") == ()


def test_function_locals_are_written_back_into_a_running_frame():
    def body():
        total = 1
        scriptvars.write(sys._getframe(), {"total": 42, "fresh": "y"})
        return total

    assert body() == 42


def test_module_globals_are_written_back_and_read():
    frame_globals = {"__name__": "m"}
    code = compile("import sys\nframe = sys._getframe()\n", "<m>", "exec")
    exec(code, frame_globals)
    frame = frame_globals["frame"]
    scriptvars.write(frame, {"running": 3.5})
    assert frame_globals["running"] == 3.5
    assert scriptvars.read(frame, ("running", "missing")) == {"running": 3.5}
