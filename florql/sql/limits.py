"""How much memory a query may use: a default below DuckDB's own, and the `--memory-limit` flag.

DuckDB's default limit is 80% of the machine's RAM: a careless cross join then grows until the
machine swaps, while training may be running beside it. florql's default is half of the memory
this process may use (the machine's RAM, or the cgroup's limit when that is lower, as in a
container); `--memory-limit 8GB` (or `connect(memory_limit="8GB")`) sets another. A query that
needs more fails with a sentence naming the limit (DuckDB spills what it can to florql's
private temporary folder first).

>>> parse_memory_limit("512MB"), parse_memory_limit(" 2 gib ")
('512MB', '2GiB')
>>> parse_memory_limit("lots")
Traceback (most recent call last):
...
florql_storage.errors.BadInputError: --memory-limit 'lots' is not a size; write it like 512MB or 8GB
"""

from __future__ import annotations

import os
import re

from florql.errors import BadInputError

DEFAULT_FRACTION = 0.5
_UNITS = {u.lower(): u for u in ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")
_CGROUP_LIMIT = "/sys/fs/cgroup/memory.max"


def parse_memory_limit(text: str) -> str:
    """A size in DuckDB's spelling (`512MB`, `8GB`, `2GiB`).

    Raises:
        BadInputError: not a number followed by a unit.
    """
    found = _SIZE.match(text)
    unit = _UNITS.get(found.group(2).lower()) if found else None
    if found is None or unit is None or float(found.group(1)) <= 0:
        raise BadInputError(f"--memory-limit {text!r} is not a size; write it like 512MB or 8GB")
    return f"{found.group(1)}{unit}"


def default_memory_limit() -> str:
    """Half of the memory this process may use, in MB (DuckDB's spelling)."""
    available = _physical_bytes()
    cgroup = _cgroup_bytes()
    if cgroup is not None:
        available = min(available, cgroup)
    return f"{max(64, int(available * DEFAULT_FRACTION) // 2**20)}MB"


def _physical_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):  # not POSIX: assume a modest machine
        return 8 * 2**30


def _cgroup_bytes() -> int | None:
    try:
        with open(_CGROUP_LIMIT, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit
