"""What florql.log accepts, and the arg casting rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from florql.errors import BadInputError
from florql.session import cast_override
from florql.values import MAX_ELEMENTS, to_loggable


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (1, 1),
        (0.25, 0.25),
        (True, True),
        ("x", "x"),
        (None, None),
        (np.float64(0.5), 0.5),
        (np.int32(7), 7),
        (np.bool_(True), True),
        (torch.tensor(0.5), 0.5),
        (torch.tensor(3), 3),
        (np.arange(3), [0, 1, 2]),
        (torch.tensor([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),
        ((1, "a", [None]), [1, "a", [None]]),
        ({"k": np.float32(2.0), 3: [1]}, {"k": 2.0, 3: [1]}),
    ],
)
def test_loggable_values_are_stored_as_plain_data(value, stored):
    out = to_loggable("v", value)
    assert out == stored and type(out) is type(stored)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        torch.nn.Linear(1, 1),
        np.zeros(MAX_ELEMENTS + 1),
        {"k": object()},
        {(1, 2): 3},
        b"bytes",
        1j,
    ],
)
def test_other_values_fail_at_the_log_call_naming_the_variable(value):
    with pytest.raises(TypeError, match=r"florql\.log\('grad', \.\.\.\): cannot log"):
        to_loggable("grad", value)


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("0.5", 1.0, 0.5),
        ("3", 1, 3),
        ("true", False, True),
        ("0", True, False),
        ("adam", "sgd", "adam"),
        ("x", None, "x"),
    ],
)
def test_arg_overrides_are_cast_to_the_default_type(text, default, expected):
    out = cast_override("a", text, default)
    assert out == expected and type(out) is type(expected)


def test_arg_override_that_does_not_parse_is_bad_input():
    with pytest.raises(BadInputError, match="cannot convert to int"):
        cast_override("epochs", "many", 3)
