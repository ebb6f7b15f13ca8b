"""Shared fixtures: every behavioural storage test runs on MemFS and on RealFS (TinyDB's habit)."""

from __future__ import annotations

import os

import pytest
from florql_storage import Store
from florql_storage.fs import MemFS, RealFS

SCALE = max(1, int(os.environ.get("FLORQL_TEST_SCALE", "1")))


class FSCase:
    """A file system plus a store path on it, and helpers to reopen the store."""

    def __init__(self, fs, root: str) -> None:
        self.fs, self.root = fs, root

    def open(self, **kw) -> Store:
        return Store.open(self.root, fs=self.fs, **kw)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"


@pytest.fixture(params=["mem", "real"])
def fscase(request, tmp_path) -> FSCase:
    if request.param == "mem":
        return FSCase(MemFS(), "/store")
    return FSCase(RealFS(), str(tmp_path / "store"))


def value(i: int, run: str = "r1") -> list:
    """A VALUE body unique to i."""
    return [run, i, "loss", i * 0.5, [["epoch", i // 10, i // 10]], float(i), ""]
