"""The difference between the user's current code and the code a replay runs, as a unified diff.

Replay runs the recorded code with only the new log statements spliced in (splicer.py); every
other edit of the current code is not replayed. Listing those edits line by line
(`Splice.other_edits`) says what differs but not how; a unified diff from the current file to
the file that will run shows it the way a user reads code changes. The splicer's early-exit
guard (early_exit.py) is florql's own line, not the user's code, and is left out.

>>> print("\\n".join(diff_lines({"t.py": "a = 1\\nb = 3\\n"}, {"t.py": "a = 1\\nb = 2\\n"})))
--- t.py (your current code)
+++ t.py (what the replay runs)
@@ -1,2 +1,2 @@
 a = 1
-b = 3
+b = 2
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

_GUARD = "_replay_rest_unneeded()"
MAX_LINES = 60  # in a warning before a replay; `florql explain` shows all


def diff_lines(current: Mapping[str, str | None], will_run: Mapping[str, str]) -> list[str]:
    """Unified diff lines (no newlines) from each current file to the file replay runs."""
    out: list[str] = []
    for rel in sorted(will_run):
        cur = current.get(rel)
        if cur is None:  # the file is gone now: other_edits says so
            continue
        runs = [line for line in will_run[rel].splitlines() if _GUARD not in line]
        mine = cur.splitlines()
        if runs == mine:
            continue
        out += difflib.unified_diff(
            mine,
            runs,
            f"{rel} (your current code)",
            f"{rel} (what the replay runs)",
            n=1,
            lineterm="",
        )
    return out


def shortened(lines: list[str], limit: int = MAX_LINES) -> list[str]:
    """At most `limit` lines, the last saying how many more `florql explain` shows."""
    if len(lines) <= limit:
        return lines
    return lines[:limit] + [f"... {len(lines) - limit} more lines (`florql explain` shows all)"]
