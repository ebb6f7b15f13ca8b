"""Script variables a skipped inner loop must leave behind: static analysis and frame writes."""

from __future__ import annotations

import ast
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


def _plan(src: str, outer: str, inner: str | None, **kw):
    tree = ast.parse(src)
    lines = src.splitlines()
    line = next(i + 1 for i, s in enumerate(lines) if outer in s)
    inner_line = next(i + 1 for i, s in enumerate(lines) if inner in s) if inner else None
    return scriptvars.plan(tree, line, tree if inner else None, inner_line, **kw)


def test_plan_finds_what_the_inner_loop_changes_and_later_code_reads():
    p = _plan(
        SCRIPT, 'in florql.loop("epoch"', 'loop("step"', same_frame=True, outer_is_module=False
    )
    assert p.outer == ("last_i", "n", "total")
    # What no recorded code reads after the restore point is kept for new statements.
    assert set(p.extra_outer) >= {"scratch", "i", "x", "j", "unrelated"}


def test_plan_finds_loop_carried_globals_and_values_changed_in_place():
    src = """
import florql
lr, best, seen = 1.0, None, {}
def adjust():
    global lr
    lr /= 4
for epoch in florql.loop("epoch", range(3)):
    for i in florql.loop("step", range(4)):
        pass
    val = epoch * 2.0
    seen["val"].append(val)
    if best is None or val < best:
        best = val
    else:
        adjust()
"""
    p = _plan(
        src, 'florql.loop("epoch"', 'florql.loop("step"', same_frame=True, outer_is_module=True
    )
    assert p.outer == ("best", "lr")
    assert p.receivers == ("seen",)
    assert "val" in p.extra_outer and "val" not in p.outer  # assigned before any read


def test_plan_without_the_loop_or_on_unparsable_code_finds_nothing():
    assert _plan("x = 1\n", "x = 1", None, same_frame=True, outer_is_module=True) == (
        scriptvars.VarPlan()
    )


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
