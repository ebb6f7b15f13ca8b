"""The splicer puts new log statements into the recorded code, or says exactly why it cannot."""

from __future__ import annotations

import ast
import textwrap

import pytest

from florql.errors import ReplayError
from florql.replay.early_exit import GUARD
from florql.replay.splicer import new_names, splice

V1 = textwrap.dedent(
    """\
    import florql


    def evaluate(model):
        total = model * 2
        return total


    model = 1.0
    data = [1, 2, 3]
    florql.checkpointing()
    for epoch in florql.loop("epoch", range(1, 4)):
        for step, x in florql.loop("step", enumerate(data)):
            loss = model * x
            model = model - 0.1 * loss
            florql.log("loss", loss)
        acc = evaluate(model)
        florql.log("acc", acc)
    print("done")
    """
)


def _edit(text: str, after: str, new: str) -> str:
    """Insert line `new` (already indented) after the first line containing `after`."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if after in line:
            lines.insert(i + 1, new + "\n")
            return "".join(lines)
    raise AssertionError(f"{after!r} not found")


def _body_of_loop(tree: ast.Module, name: str) -> list[ast.stmt]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.For)
            and isinstance(node.iter, ast.Call)
            and getattr(node.iter.args[0], "value", None) == name
        ):
            return node.body
    raise AssertionError(name)


def test_statement_inside_inner_loop_goes_after_its_unchanged_neighbour() -> None:
    v2 = _edit(V1, "model = model - 0.1", '        florql.log("grad", loss * 2)')
    s = splice({"train.py": V1}, {"train.py": v2})
    assert s.sources["train.py"] == v2  # nothing else changed: the result is the new file
    (st,) = s.statements
    assert st.names == ("grad",) and st.loops == ("epoch", "step") and st.function is None
    assert st.recorded_line == 16 and s.other_edits == []


def test_statement_after_inner_loop_is_a_per_epoch_statement() -> None:
    v2 = _edit(V1, 'florql.log("acc", acc)', '    florql.log("wnorm", abs(model))')
    s = splice({"train.py": V1}, {"train.py": v2})
    (st,) = s.statements
    assert st.loops == ("epoch",)
    body = _body_of_loop(ast.parse(s.sources["train.py"]), "epoch")
    assert ast.unparse(body[-2]) == "florql.log('wnorm', abs(model))"
    # ...followed by the guard that lets a replay skip the rest of a restored iteration.
    assert ast.unparse(body[-1]).startswith("if __import__('florql').api._replay_rest_unneeded()")


def test_statement_in_a_function_takes_the_loops_of_its_call_site() -> None:
    v2 = _edit(V1, "total = model * 2", '    florql.log("total", total)')
    s = splice({"train.py": V1}, {"train.py": v2})
    (st,) = s.statements
    assert st.function == "evaluate" and st.loops == ("epoch",)
    assert '    total = model * 2\n    florql.log("total", total)\n' in s.sources["train.py"]


def test_function_called_from_two_loop_contexts_has_unknown_loops() -> None:
    v1 = V1.replace(
        '        florql.log("loss", loss)\n',
        '        florql.log("loss", loss)\n        evaluate(model)\n',
    )
    v2 = _edit(v1, "total = model * 2", '    florql.log("total", total)')
    (st,) = splice({"train.py": v1}, {"train.py": v2}).statements
    assert st.loops is None


def test_edits_elsewhere_are_listed_and_not_replayed() -> None:
    v2 = V1.replace("data = [1, 2, 3]", "data = [4, 5, 6]").replace('print("done")', 'print("bye")')
    v2 = _edit(v2, "loss = model * x", '        florql.log("x2", x * x)')
    s = splice({"train.py": V1}, {"train.py": v2})
    spliced = s.sources["train.py"]
    assert "data = [1, 2, 3]" in spliced and 'print("done")' in spliced  # recorded code replays
    assert 'florql.log("x2", x * x)' in spliced
    assert len(s.other_edits) == 4  # two changed lines, each listed as added and as removed
    assert any("data = [4, 5, 6]" in e for e in s.other_edits)


def test_neighbour_changed_on_one_side_still_places_by_the_other() -> None:
    # The statement before it changed; the one after is unchanged and anchors it.
    v2 = V1.replace("model = model - 0.1 * loss", "model = model - 0.2 * loss")
    v2 = _edit(v2, "model = model - 0.2", '        florql.log("g", loss)')
    s = splice({"train.py": V1}, {"train.py": v2})
    lines = s.sources["train.py"].splitlines()
    i = lines.index('        florql.log("g", loss)')
    assert lines[i - 1].strip() == "model = model - 0.1 * loss"
    assert lines[i + 1].strip() == 'florql.log("loss", loss)'


def test_ambiguous_placement_is_an_error_naming_the_line() -> None:
    # The statement that used to sit next to it was deleted: before or after where it was?
    v2 = V1.replace("        model = model - 0.1 * loss\n", '        florql.log("g", loss)\n')
    with pytest.raises(ReplayError, match=r"train.py line 15: .*ambiguous"):
        splice({"train.py": V1}, {"train.py": v2})


def test_undefined_name_is_an_error_naming_the_line_and_the_name() -> None:
    v2 = _edit(V1, "loss = model * x", "        g = loss * 3")
    v2 = _edit(v2, "g = loss * 3", '        florql.log("g", g)')
    with pytest.raises(
        ReplayError, match=r"line 16: .*reads g, which the recorded code does not define"
    ):
        splice({"train.py": V1}, {"train.py": v2})


def test_block_without_recorded_counterpart_is_an_error() -> None:
    v2 = V1.replace('for step, x in florql.loop("step"', 'for step, x in florql.loop("batch"')
    v2 = _edit(v2, "loss = model * x", '        florql.log("g", loss)')
    with pytest.raises(ReplayError, match=r"line 13: .*no counterpart"):
        splice({"train.py": V1}, {"train.py": v2})


def test_assignment_of_a_logged_value_is_spliced_when_its_target_is_new() -> None:
    v2 = _edit(V1, "loss = model * x", '        sq = florql.log("sq", x * x)')
    s = splice({"train.py": V1}, {"train.py": v2})
    assert s.statements[0].names == ("sq",)


def test_assignment_to_a_name_the_recorded_code_uses_is_refused() -> None:
    v2 = _edit(V1, "loss = model * x", '        model = florql.log("m", model)')
    with pytest.raises(ReplayError, match="assigns model"):
        splice({"train.py": V1}, {"train.py": v2})


def test_log_wrapped_around_a_recorded_expression_replaces_that_statement() -> None:
    v2 = V1.replace("loss = model * x", 'loss = florql.log("raw", model * x)')
    s = splice({"train.py": V1}, {"train.py": v2})
    assert s.sources["train.py"] == v2
    assert s.statements[0].names == ("raw",) and s.statements[0].loops == ("epoch", "step")


def test_conditional_block_of_new_statements_is_spliced_whole() -> None:
    v2 = _edit(
        V1, "loss = model * x", '        if step % 2 == 0:\n            florql.log("even", loss)'
    )
    s = splice({"train.py": V1}, {"train.py": v2})
    assert s.sources["train.py"] == v2 and s.statements[0].names == ("even",)


def test_only_wanted_names_are_spliced() -> None:
    v2 = _edit(V1, "loss = model * x", '        florql.log("a", x)\n        florql.log("b", x)')
    s = splice({"train.py": V1}, {"train.py": v2}, want={"b"})
    assert s.names == {"b"} and 'florql.log("a"' not in s.sources["train.py"]


def test_new_statement_in_a_local_module_is_spliced_there() -> None:
    util = "import florql\n\n\ndef step(x):\n    y = x + 1\n    return y\n"
    util2 = util.replace("    return y", '    florql.log("y", y)\n    return y')
    s = splice({"train.py": V1, "util.py": util}, {"train.py": V1, "util.py": util2})
    assert s.sources["util.py"] == util2 and s.sources["train.py"] == V1
    assert s.statements[0].file == "util.py" and s.statements[0].loops is None


def test_new_names_ignores_names_the_recorded_code_already_logs() -> None:
    v2 = _edit(V1, "loss = model * x", '        florql.log("loss", 0)\n        florql.log("n", 0)')
    assert new_names({"train.py": V1}, {"train.py": v2}) == {"n"}


def test_one_line_block_falls_back_to_regenerated_code_that_parses_as_intended() -> None:
    v1 = 'import florql\nfor e in florql.loop("epoch", range(2)): florql.log("a", e)\n'
    v2 = 'import florql\nfor e in florql.loop("epoch", range(2)):\n    florql.log("a", e)\n    florql.log("b", e)\n'
    s = splice({"train.py": v1}, {"train.py": v2})
    assert ast.dump(ast.parse(s.sources["train.py"])) == ast.dump(ast.parse(v2))
    assert s.code_hash and s.statements[0].recorded_line is None


def test_missing_current_file_is_an_edit_and_the_recorded_version_replays() -> None:
    s = splice({"train.py": V1}, {"train.py": None})
    assert s.sources == {"train.py": V1} and "missing" in s.other_edits[0]


def test_position_relative_to_the_inner_loop_is_known() -> None:
    before = _edit(V1, 'for epoch in florql.loop("epoch"', '    florql.log("start", model)')
    after = _edit(V1, 'florql.log("acc", acc)', '    florql.log("end", model)')
    in_fn = _edit(V1, "total = model * 2", '    florql.log("total", total)')
    flags = [
        splice({"train.py": V1}, {"train.py": v}).statements[0] for v in (before, after, in_fn)
    ]
    assert [(s.loops, s.after_inner) for s in flags] == [
        (("epoch",), False),
        (("epoch",), True),
        (("epoch",), True),
    ]


def test_added_and_removed_lines_are_listed_as_such() -> None:
    v2 = V1.replace('print("done")\n', "") + "x = 1\n"
    v2 = _edit(v2, "loss = model * x", '        florql.log("g", loss)')
    edits = splice({"train.py": V1}, {"train.py": v2}).other_edits
    assert len(edits) == 2
    assert "train.py:20 now: `x = 1`" in edits
    assert 'train.py:19 recorded: `print("done")`' in edits


def test_new_blocks_of_log_statements_and_their_own_variables_are_spliced() -> None:
    new = (
        "    with no_grad():\n"
        '        wn = florql.log("wn", abs(model))\n'
        "    for k in range(2):\n"
        '        florql.log("k", k * wn)\n'
    )
    v1 = V1.replace(
        "import florql\n", "import florql\nfrom contextlib import nullcontext as no_grad\n"
    )
    v2 = _edit(v1, 'florql.log("acc", acc)', new.rstrip("\n"))
    s = splice({"train.py": v1}, {"train.py": v2})
    guard = "    " + GUARD + "\n"  # per-epoch statements: the replay's early exit follows them
    assert s.sources["train.py"].count(guard) == 1
    assert s.sources["train.py"].replace(guard, "") == v2 and s.names == {"wn", "k"}


def test_a_new_loop_variable_that_the_recorded_code_uses_is_refused() -> None:
    v2 = _edit(V1, 'florql.log("acc", acc)', '    for x in range(2):\n        florql.log("k", x)')
    with pytest.raises(ReplayError, match="assigns x"):
        splice({"train.py": V1}, {"train.py": v2})


def test_new_log_statements_not_asked_for_are_not_listed_as_edits() -> None:
    v2 = _edit(V1, "loss = model * x", '        florql.log("a", x)\n        florql.log("b", x)')
    s = splice({"train.py": V1}, {"train.py": v2}, want={"a"})
    assert s.names == {"a"} and s.other_edits == []


EVAL = textwrap.dedent(
    """\
    import florql


    def evaluate(model, loader):
        total = 0
        for x in loader:
            total += model * x
        return total


    def train_epoch(model, data):
        for step, x in florql.loop("step", enumerate(data)):
            model = model - 0.1 * x
        return model


    model = 1.0
    data = [1, 2, 3]
    for epoch in florql.loop("epoch", range(3)):
        model = train_epoch(model, data)
        for j in florql.loop("check", range(2)):
            florql.log("c", j)
        florql.log("acc", evaluate(model, data))
    """
)


@pytest.mark.parametrize(
    ("anchor", "new", "loops", "after"),
    [
        ("total += model * x", '        florql.log("batch", x)', ("epoch", ""), True),
        ('florql.log("c", j)', '        florql.log("c2", j)', ("epoch", "check"), True),
        ("model = model - 0.1 * x", '        florql.log("s", x)', ("epoch", "step"), False),
        ("return model", '    florql.log("m", model)', ("epoch",), True),
    ],
)
def test_statements_after_the_first_inner_loop_can_skip_it_even_inside_later_loops(
    anchor: str, new: str, loops: tuple, after: bool
) -> None:
    lines = EVAL.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if anchor in line)
    # insert before `return model`, after the others
    at = i if anchor == "return model" else i + 1
    v2 = "".join([*lines[:at], new + "\n", *lines[at:]])
    (st,) = splice({"train.py": EVAL}, {"train.py": v2}).statements
    assert (st.loops, st.after_inner) == (loops, after)


def test_a_new_statement_for_a_name_not_asked_for_is_not_an_other_edit() -> None:
    v2 = _edit(V1, 'florql.log("loss", loss)', '        florql.log("grad", loss * 2)')
    v2 = _edit(v2, 'florql.log("acc", acc)', '    florql.log("model", model)')
    s = splice({"train.py": V1}, {"train.py": v2}, want={"model"})
    assert [st.names for st in s.statements] == [("model",)]
    assert 'florql.log("grad"' not in s.sources["train.py"]  # not replayed this time...
    assert s.other_edits == []  # ...and not reported as an edit the replay ignores
