"""florql's settings: every `FLORQL_*` environment variable is read here and nowhere else.

Each setting is a function of an environment mapping (default `os.environ`), read when called,
never at import: a warm replay server rebuilds `os.environ` for every task it runs
(florql/replay/warm.py), so a value cached at import would be the first caller's. Callers read
a setting once, where a command or session starts, and pass the value down.

| variable | read by | default |
| --- | --- | --- |
| FLORQL_STORE | every command, `python train.py`, `florql.connect()` | `.florql` |
| FLORQL_DISABLE | `florql.log` and friends (`=1`: pass-through) | off |
| FLORQL_BUFFER_RECORDS | the recording session's flusher | 1,000,000 |
| FLORQL_CKPT_EVERY | the checkpoint policy (fixed schedule) | adaptive |
| FLORQL_CKPT_MEMORY | checkpoint snapshot buffers (bytes) | 2 GiB |
| FLORQL_CACHE_DIR | the SQL cache folder | `$XDG_CACHE_HOME/florql/sql` |
| FLORQL_PROGRESS | replay's progress bar (`1`/`0` force it on/off) | on a terminal |
| FLORQL_REPLAY_TOLERANCE | replay's fidelity check | 0 (exact) |
| FLORQL_WARM_SECONDS | warm replay servers' idle time (`0`: off) | 300 |
| FLORQL_WARM_DIR | warm replay servers' folder | `$TMPDIR/florql-warm-UID` |

>>> store({}), store({"FLORQL_STORE": "/data/s"}), store({"FLORQL_STORE": "/x"}, explicit="y")
('.florql', '/data/s', 'y')
>>> buffer_records({}), buffer_records({"FLORQL_BUFFER_RECORDS": "5000"})
(1000000, 5000)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

from florql.errors import BadInputError

Environ = Mapping[str, str]

DEFAULT_STORE = ".florql"
DEFAULT_BUFFER_RECORDS = 1_000_000
DEFAULT_CKPT_MEMORY = 2 << 30
DEFAULT_WARM_SECONDS = 300.0


def store(environ: Environ = os.environ, explicit: str | None = None) -> str:
    """The store a command uses: `explicit` (`--store`), else `$FLORQL_STORE`, else `.florql`."""
    return explicit or environ.get("FLORQL_STORE") or DEFAULT_STORE


def default_store() -> str:
    """The store a command uses when `--store` is not given: `$FLORQL_STORE` or `./.florql`."""
    return store(os.environ)


def disabled(environ: Environ = os.environ) -> bool:
    """`FLORQL_DISABLE=1`: florql's calls pass values through and record nothing."""
    return environ.get("FLORQL_DISABLE") == "1"


def buffer_records(environ: Environ = os.environ) -> int:
    """`FLORQL_BUFFER_RECORDS`: records kept in memory while the store refuses writes.

    Raises:
        BadInputError: the value is not a positive integer.
    """
    text = environ.get("FLORQL_BUFFER_RECORDS")
    if not text:
        return DEFAULT_BUFFER_RECORDS
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise BadInputError(
            f"FLORQL_BUFFER_RECORDS={text} must be a positive number of records, e.g. 1000000"
        )
    return n


def ckpt_every(environ: Environ = os.environ) -> int | None:
    """`FLORQL_CKPT_EVERY=k`: checkpoint every k-th outer iteration; None: the adaptive policy."""
    return int(environ.get("FLORQL_CKPT_EVERY") or 0) or None


def ckpt_memory(environ: Environ = os.environ) -> int:
    """`FLORQL_CKPT_MEMORY`: bytes the checkpoint snapshot buffers may hold."""
    return int(environ.get("FLORQL_CKPT_MEMORY", DEFAULT_CKPT_MEMORY))


def cache_dir(environ: Environ = os.environ) -> str:
    """The SQL cache folder: `$FLORQL_CACHE_DIR`, else `$XDG_CACHE_HOME/florql/sql`, else
    `~/.cache/florql/sql`."""
    explicit = environ.get("FLORQL_CACHE_DIR")
    if explicit:
        return explicit
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "florql", "sql")


def progress_forced(environ: Environ = os.environ) -> bool | None:
    """`FLORQL_PROGRESS=1` forces replay's progress bar, `=0` hides it; None: not forced."""
    forced = environ.get("FLORQL_PROGRESS", "").strip()
    return forced == "1" if forced in ("0", "1") else None


def replay_tolerance(environ: Environ = os.environ) -> float:
    """`FLORQL_REPLAY_TOLERANCE`: relative tolerance of replay's fidelity check (0: exact).

    Raises:
        BadInputError: the value is not a number >= 0.
    """
    text = environ.get("FLORQL_REPLAY_TOLERANCE", "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise BadInputError(
            f"FLORQL_REPLAY_TOLERANCE={text!r} must be a number >= 0 (e.g. 1e-6); "
            "unset it for exact checks"
        )
    return value


def warm_seconds(environ: Environ = os.environ) -> float:
    """`FLORQL_WARM_SECONDS`: how long a warm replay server waits idle; 0 turns them off."""
    text = environ.get("FLORQL_WARM_SECONDS", "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_WARM_SECONDS
    except ValueError:
        return DEFAULT_WARM_SECONDS


def warm_dir(environ: Environ = os.environ) -> str:
    """`FLORQL_WARM_DIR`, else `florql-warm-UID` in the temp folder."""
    return environ.get("FLORQL_WARM_DIR") or os.path.join(
        tempfile.gettempdir(), f"florql-warm-{os.getuid()}"
    )
