"""Where the replay's early-exit guard goes, and where it must not (florql/replay/early_exit.py)."""

from __future__ import annotations

import textwrap

from florql.replay.early_exit import GUARD, add_iteration_exit

SCRIPT = textwrap.dedent(
    """\
    import florql
    def evaluate(m):
        return m
    for epoch in florql.loop("epoch", range(3)):
        for step in florql.loop("step", range(2)):
            florql.log("g", step)
        florql.log("w", epoch)
        if epoch:
            florql.log("w2", epoch)
        acc = evaluate(epoch)
    """
)


def test_guard_follows_the_last_new_statement_in_the_outer_body() -> None:
    out = add_iteration_exit(SCRIPT, {"w", "w2"}, "epoch").splitlines()
    assert out[out.index('        florql.log("w2", epoch)') + 1] == "    " + GUARD
    assert out.count("    " + GUARD) == 1
    compile("\n".join(out), "train.py", "exec")


def test_no_guard_for_a_statement_inside_the_inner_loop() -> None:
    assert add_iteration_exit(SCRIPT, {"g"}, "epoch") == SCRIPT


def test_no_guard_when_a_new_statement_is_outside_the_outer_loop() -> None:
    inside_function = SCRIPT.replace("    return m\n", '    florql.log("m", m)\n    return m\n')
    assert 'florql.log("m", m)' in inside_function
    assert add_iteration_exit(inside_function, {"w", "m"}, "epoch") == inside_function


def test_no_guard_for_a_statement_before_the_inner_loop() -> None:
    before = SCRIPT.replace(
        '    for step in florql.loop("step"',
        '    florql.log("b", epoch)\n    for step in florql.loop("step"',
    )
    assert add_iteration_exit(before, {"b"}, "epoch") == before


def test_no_guard_when_two_loops_share_the_outer_name() -> None:
    twice = SCRIPT + 'for epoch in florql.loop("epoch", range(1)):\n    pass\n'
    assert add_iteration_exit(twice, {"w"}, "epoch") == twice
