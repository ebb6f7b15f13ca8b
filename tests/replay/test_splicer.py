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
    v2 = _edit(V1, "loss = model * x", '        florql.log("g", g)')
    with pytest.raises(
        ReplayError, match=r"line 15: .*reads g, which the recorded code does not define"
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


# --- new helper statements (issue 9, item 6) ---------------------------------------------------

TORCH = textwrap.dedent(
    """\
    import random

    import numpy as np
    import torch

    import florql

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2)
    it = iter(loader)
    hist = [0.0]
    florql.checkpointing(model=model, optimizer=opt)
    for epoch in florql.loop("epoch", range(3)):
        for step, x in florql.loop("step", enumerate(loader)):
            opt.zero_grad()
            loss = model(torch.ones(2, 4) * x[:, None]).sum()
            loss.backward()
            opt.step()
            florql.log("loss", loss.item())
        pred = model(torch.ones(5, 4)).argmax(1)
        y = torch.arange(5) % 3
        florql.log("acc", (pred == y).float().mean().item())
    print("done")
    """
)
GRAD = (
    "        g = torch.sqrt(sum(p.grad.norm() ** 2 for p in model.parameters() "
    "if p.grad is not None))\n"
    '        florql.log("grad_norm", g.item())'
)
PER_CLASS = (
    "    per_class = []\n"
    "    for c in range(3):\n"
    "        hit = ((pred == c) & (y == c)).sum().item()\n"
    "        per_class.append(hit / max(1, (y == c).sum().item()))\n"
    '    florql.log("per_class", per_class)'
)


def test_a_helper_variable_and_its_log_splice_together() -> None:
    v2 = _edit(TORCH, "opt.step()", GRAD)
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert s.sources["train.py"] == v2 and s.other_edits == []
    assert [(st.names, st.loops) for st in s.statements] == [
        ((), ("epoch", "step")),  # the helper: no name of its own, but it runs in the inner loop
        (("grad_norm",), ("epoch", "step")),
    ]


def test_a_helper_loop_building_a_list_splices_with_its_log() -> None:
    v2 = _edit(TORCH, "y = torch.arange(5) % 3", PER_CLASS)
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert s.sources["train.py"].replace("    " + GUARD + "\n", "") == v2
    assert s.names == {"per_class"} and len(s.statements) == 3
    assert all(st.loops == ("epoch",) and st.after_inner for st in s.statements)


def test_a_multi_line_log_statement_splices_whole() -> None:
    new = (
        '        florql.log(\n            "w0",\n            float(model.weight[0, 0]),\n        )'
    )
    v2 = _edit(TORCH, "opt.step()", new)
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert s.sources["train.py"] == v2 and s.other_edits == []
    (st,) = s.statements
    assert st.names == ("w0",) and st.text.count("\n") == 3 and st.recorded_line == 20


def test_a_multi_line_helper_splices_whole() -> None:
    new = "        g2 = sum(\n            p.detach().norm()\n            for p in model.parameters()\n        )\n"
    v2 = _edit(TORCH, "opt.step()", new + '        florql.log("g2", float(g2))')
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert s.sources["train.py"] == v2 and s.names == {"g2"}


def test_a_new_import_used_by_a_new_log_is_spliced() -> None:
    v2 = TORCH.replace("import random\n", "import math\nimport random\n", 1)
    v2 = _edit(v2, "y = torch.arange(5) % 3", '    florql.log("e", math.exp(1.0))')
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert "import math\n" in s.sources["train.py"] and s.other_edits == []


def test_helpers_of_names_not_asked_for_are_neither_spliced_nor_listed() -> None:
    v2 = _edit(TORCH, "opt.step()", GRAD)
    v2 = _edit(v2, 'florql.log("acc"', '    florql.log("b", float(y.sum()))')
    s = splice({"train.py": TORCH}, {"train.py": v2}, want={"b"})
    assert s.names == {"b"} and "torch.sqrt" not in s.sources["train.py"]
    assert s.other_edits == []


def test_a_new_statement_no_new_log_reads_is_an_edit_not_replayed() -> None:
    v2 = _edit(TORCH, "opt.step()", '        z = loss * 2\n        florql.log("l2", 2.0)')
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert "z = loss * 2" not in s.sources["train.py"]
    assert [e for e in s.other_edits if "z = loss * 2" in e]


def test_an_accumulator_over_the_inner_loop_runs_where_it_is_written() -> None:
    v2 = _edit(TORCH, 'for epoch in florql.loop("epoch"', "    total = 0.0")
    v2 = _edit(v2, "opt.step()", "        total += loss.item()")
    v2 = _edit(v2, 'florql.log("acc"', '    florql.log("total", total)')
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert s.sources["train.py"] == v2
    # The planner sees a statement inside the inner loop, so it re-executes iterations.
    assert [st.loops for st in s.statements] == [("epoch",), ("epoch", "step"), ("epoch",)]


def test_an_accumulator_inside_a_function_called_per_epoch_is_not_carried() -> None:
    v2 = _edit(EVAL, "def train_epoch(model, data):", "    seen = 0")
    v2 = _edit(v2, "model = model - 0.1 * x", "        seen += 1")
    v2 = _edit(v2, "model = train_epoch(model, data)", '    florql.log("n", 1)')
    v2 = v2.replace("    return model\n", '    florql.log("seen", seen)\n    return model\n')
    s = splice({"train.py": EVAL}, {"train.py": v2})
    assert s.names == {"seen", "n"} and "seen += 1" in s.sources["train.py"]


@pytest.mark.parametrize(
    ("helper", "why"),
    [
        ("best = max(best, float(loss))", "reads best, which new code sets inside the epoch loop"),
        ("best = float(loss) if epoch == 0 else best", "reads best"),
    ],
)
def test_a_helper_carried_from_one_iteration_to_the_next_is_refused(helper: str, why: str) -> None:
    v2 = _edit(TORCH, "hist = [0.0]", "best = 0.0")
    v2 = _edit(v2, 'florql.log("acc"', f"    {helper}\n" + '    florql.log("best", best)')
    with pytest.raises(ReplayError, match=rf"train.py line 25: .*{why}.*OVER \(ORDER BY epoch\)"):
        splice({"train.py": TORCH}, {"train.py": v2})


def test_a_helper_set_in_the_loop_and_read_after_it_is_refused() -> None:
    v2 = _edit(TORCH, 'florql.log("acc"', "    last = float(loss)")
    v2 = v2.replace('print("done")\n', 'florql.log("last", last)\n')
    with pytest.raises(ReplayError, match=r"line 25: .*reads last, which new code sets inside"):
        splice({"train.py": TORCH}, {"train.py": v2})


@pytest.mark.parametrize(
    ("new", "reads", "line", "why"),
    [
        ("model.zero_grad()", "model", 20, r"calls `model.zero_grad\(\)`, which may change"),
        ("g = opt.step()", "g", 20, r"calls `opt.step\(\)`, which may change state"),
        ("g = loss.detach().add_(1)", "g", 20, r"calls `loss.detach\(\).add_\(\)`"),
        ("model.eval()", "model", 20, r"calls `model.eval\(\)`"),
        ("hist.append(1.0)", "hist", 20, r"calls `hist.append\(\)`"),
        ("model.seen = 1", "model", 20, r"assigns to `model.seen`"),
        ("hist[0] = 1.0", "hist", 20, r"assigns to `hist\[0\]`"),
        ("g = model.weight\n        g += 1", "g", 21, r"updates g in place .*`g = g \+ \.\.\.`"),
        ("g = [1.0]\n        del g[0]", "g", 21, r"deletes"),
        ("global g\n        g = 1", "g", 20, r"declares g global"),
        ("g = torch.rand(1)", "g", 20, r"draws random numbers \(torch.rand\)"),
        ("g = random.random()", "g", 20, r"draws random numbers \(random.random\)"),
        ("g = np.random.permutation(3)", "g", 20, r"random numbers \(numpy.random.permutation\)"),
        ("g = torch.zeros(3).normal_()", "g", 20, r"draws random numbers"),
        ("g = next(it)", "g", 20, r"calls next\(\), which advances an iterator"),
        ("g = sum(len(b) for b in loader)", "g", 20, r"iterates over loader, which the recorded"),
        (
            "g = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
            "g",
            20,
            r"calls `torch.nn.utils.clip_grad_norm_\(\)`",
        ),
    ],
)
def test_new_statements_that_change_recorded_state_or_draw_randomness_are_refused(
    new: str, reads: str, line: int, why: str
) -> None:
    # Each is followed by a log reading what it changes, so the log needs it spliced.
    v2 = _edit(TORCH, "opt.step()", "        " + new)
    v2 = _edit(v2, new.splitlines()[-1].strip(), f'        florql.log("g", repr({reads}))')
    with pytest.raises(ReplayError, match=rf"train.py line {line}: cannot replay .*{why}"):
        splice({"train.py": TORCH}, {"train.py": v2})


def test_changing_objects_new_statements_made_is_fine() -> None:
    new = (
        "        acc = []\n"
        "        acc.append(loss.item())\n"
        "        t = torch.zeros(2)\n"
        "        t.add_(1)\n"
        "        t[0] = 3.0\n"
        "        s = 0.0\n"
        "        s += loss.item()\n"
        '        florql.log("mix", [acc, t.tolist(), s])'
    )
    v2 = _edit(TORCH, "opt.step()", new)
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert s.sources["train.py"] == v2 and s.names == {"mix"}


def test_random_draws_inside_the_log_call_itself_are_refused_too() -> None:
    v2 = _edit(TORCH, "opt.step()", '        florql.log("r", float(torch.randn(1)))')
    with pytest.raises(ReplayError, match=r"line 20: .*draws random numbers \(torch.randn\)"):
        splice({"train.py": TORCH}, {"train.py": v2})


def test_a_helper_that_also_assigns_a_recorded_name_is_not_replayed_and_the_log_says_why() -> None:
    v2 = _edit(TORCH, "opt.step()", "        g, x = loss * 2, x\n" + '        florql.log("g", g)')
    with pytest.raises(
        ReplayError, match=r"line 21: .*reads g.*line 20 assigns it, but also assigns x"
    ):
        splice({"train.py": TORCH}, {"train.py": v2})


def test_a_helper_read_only_by_the_header_of_a_new_block_is_spliced() -> None:
    v2 = _edit(TORCH, "y = torch.arange(5) % 3", "    n_cls = 3\n" + PER_CLASS)
    v2 = v2.replace("for c in range(3):", "for c in range(n_cls):")
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert "    n_cls = 3\n" in s.sources["train.py"] and s.other_edits == []


def test_new_statements_inside_a_recorded_block_are_not_a_new_block() -> None:
    # The recorded `with` holds a recorded loop; a helper and a log added inside that loop go
    # into it, and the recorded block is not taken for a new one.
    rec = TORCH.replace(
        '    florql.log("acc"',
        "    with torch.no_grad():\n        for i in range(2):\n            ev = float(i)\n"
        '    florql.log("acc"',
    )
    cur = _edit(rec, "ev = float(i)", '            e2 = ev * 2\n            florql.log("e2", e2)')
    s = splice({"train.py": rec}, {"train.py": cur})
    assert s.sources["train.py"].replace("    " + GUARD + "\n", "") == cur
    assert [st.loops for st in s.statements] == [("epoch", ""), ("epoch", "")]


def test_a_helper_before_the_outer_loop_keeps_the_per_epoch_early_exit() -> None:
    v2 = _edit(TORCH, "hist = [0.0]", "classes = 3")
    v2 = _edit(v2, "y = torch.arange(5) % 3", '    florql.log("n", float((pred < classes).sum()))')
    s = splice({"train.py": TORCH}, {"train.py": v2})
    assert [(st.names, st.loops) for st in s.statements] == [((), ()), (("n",), ("epoch",))]
    assert s.sources["train.py"].count(GUARD) == 1


@pytest.mark.parametrize(
    "new",
    [
        "g = torch.cuda.is_available()",
        "g = torch.nn.functional.softmax(model.weight, 0).max().item()",
        "g = [p.detach().clone() for p in model.parameters()]",
        "g = {k: v.norm().item() for k, v in model.state_dict().items()}",
        "g = sorted(hist)",
        # Clipping to an infinite bound scales by exactly 1.0: the usual way to read the norm.
        "g = torch.nn.utils.clip_grad_norm_(model.parameters(), torch.inf)",
        'g = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf"))',
    ],
)
def test_reading_new_statements_are_not_refused(new: str) -> None:
    v2 = _edit(TORCH, "opt.step()", f'        {new}\n        florql.log("g", repr(g))')
    assert splice({"train.py": TORCH}, {"train.py": v2}).names == {"g"}


def test_a_helper_assigned_only_on_some_iterations_is_carried_and_refused() -> None:
    new = "    if epoch % 2 == 0:\n        even = float(loss)\n" + '    florql.log("even", even)'
    v2 = _edit(TORCH, 'florql.log("acc"', new)
    with pytest.raises(ReplayError, match=r"line 26: .*reads even, which new code sets inside"):
        splice({"train.py": TORCH}, {"train.py": v2})


def test_a_helper_assigned_on_every_branch_first_is_not_carried() -> None:
    new = "    even = 0.0\n    if epoch % 2 == 0:\n        even = float(loss)\n"
    v2 = _edit(TORCH, 'florql.log("acc"', new + '    florql.log("even", even)')
    assert splice({"train.py": TORCH}, {"train.py": v2}).names == {"even"}


def test_a_log_wrapped_around_a_multi_line_recorded_statement_replaces_it_whole() -> None:
    rec = TORCH.replace(
        "        pred = model(torch.ones(5, 4)).argmax(1)\n",
        "        pred = model(\n            torch.ones(5, 4)\n        ).argmax(1)\n",
    )
    cur = rec.replace(
        "        pred = model(\n            torch.ones(5, 4)\n        ).argmax(1)\n",
        '        pred = florql.log(\n            "pred",\n            model(\n'
        "                torch.ones(5, 4)\n            ).argmax(1),\n        )\n",
    )
    s = splice({"train.py": rec}, {"train.py": cur}, want={"pred"})
    assert s.sources["train.py"].replace("    " + GUARD + "\n", "") == cur and s.other_edits == []
