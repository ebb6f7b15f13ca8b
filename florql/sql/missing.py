"""Variables a query names that no run logged: replay them, or say clearly why not.

The replay engine (`florql.replay.hindsight.ensure`, INTERFACES §4) computes missing variables
from checkpoints when the current code of a run's script logs them. This module is the SQL
layer's side of that seam: it calls `ensure` unless replay is off, and
turns unresolved names into a `QueryError` with the runs searched and the closest known names.

>>> from florql.sql.catalog import Catalog
>>> print(not_logged_message(["grad_nrm"], Catalog(names=frozenset({"grad_norm"}), runs=("r1",))))
no run logged the variable `grad_nrm` (searched run r1); did you mean `grad_norm`?
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from florql.errors import QueryError
from florql.replay.selection import Selection
from florql.sql.catalog import Catalog


def not_logged_message(names: Iterable[str], catalog: Catalog, reason: str = "") -> str:
    """One sentence naming each variable, the runs searched, and likely intended names."""
    names = sorted(names)
    quoted = ", ".join(f"`{n}`" for n in names)
    noun = "variable" if len(names) == 1 else "variables"
    runs = list(catalog.runs)
    if not runs:
        searched = "the store has no logged values yet"
    else:
        shown = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        searched = f"searched {'run' if len(runs) == 1 else 'runs'} {shown}"
    message = f"no run logged the {noun} {quoted} ({searched}{reason})"
    hints = []
    for n in names:
        close = catalog.closest(n)
        if close:
            hints.append(" or ".join(f"`{c}`" for c in close))
    if hints:
        message += f"; did you mean {', '.join(hints)}?"
    elif catalog.names:
        known = ", ".join(sorted(catalog.names)[:10])
        message += f"; logged variables are {known}"
    return message


def _field(report: Any, key: str, default: Any) -> Any:
    if isinstance(report, dict):
        return report.get(key, default)
    return getattr(report, key, default)


def resolve_missing(
    store_path: str,
    missing: set[str],
    selection: Selection,
    catalog: Catalog,
    *,
    replay: bool,
    workers: int | None = None,
    progress: bool = False,
    partial: set[str] | frozenset[str] = frozenset(),
    tolerance: float | None = None,
    verify: int = 0,
) -> Any:
    """Replay what the query needs; return the replay report (None when nothing was asked).

    `missing` are names no run logged; `partial` are names that some run the query can select
    did not log itself (another run did, or only earlier replays did, which may not have
    covered the rows this query selects). The engine replays a partial name only for runs
    whose current code newly logs it and skips iterations already covered, so asking again
    costs a plan, not a replay; a run that cannot log it stays NULL there, with no error.

    Raises:
        QueryError: a missing name while replay is off, or no current code logs it
            (`unresolved`).
        ReplayError: the replay itself failed (raised by the engine).
    """
    if missing and not replay:
        raise QueryError(not_logged_message(missing, catalog, "; replay is off (--no-replay)"))
    if not replay or not (missing or partial):
        return None
    from florql.replay import hindsight  # imports the replay engine only when a query needs it

    names = sorted(set(missing) | set(partial))
    report = hindsight.ensure(
        store_path,
        names,
        selection,
        workers=workers,
        progress=progress,
        optional=set(partial) - set(missing),
        tolerance=tolerance,
        verify=verify,
    )
    unresolved = set(_field(report, "unresolved", ()) or ()) & set(missing)
    if unresolved:
        raise QueryError(
            not_logged_message(
                unresolved, catalog, ", and no current script logs it with florql.log"
            )
        )
    return report
