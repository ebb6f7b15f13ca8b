"""Runs the `>>>` examples in every module's docstrings (STYLE.md habit 4)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import florql_storage
import pytest

import florql


def _modules() -> list[str]:
    names = []
    for pkg in (florql, florql_storage):
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
