"""What the store holds, as the SQL layer names it: views, their columns, and logged variables.

The catalog is a snapshot taken from the cache after a refresh. It fixes the column names of the
views, including how name collisions are settled (documented in `views.py`):

- `logs`: `run_id`, one column per loop name, one per logged name, one per arg (`florql.arg`,
  argparse). A logged name equal to `run_id`, a loop name or an arg name is exposed as
  `log_<name>`; an arg whose name is taken by a loop or a logged name as `arg_<name>`. A name
  that is both logged and an arg is *ambiguous*: a query naming it bare gets an error naming
  both columns (`ambiguity`), never one of them silently.
- Renamed columns never take a name the user logged: names that need no renaming keep theirs
  first, and a renamed one takes the next free `_2`, `_3`... suffix.
- `records`: fixed columns plus one per loop name; a loop whose name is taken by a fixed column
  is exposed as `loop_<name>`.

>>> c = Catalog(names=frozenset({"loss", "epoch"}), loops=("epoch", "step"), args=("lr", "loss"))
>>> c.logs_columns()
['run_id', 'epoch', 'step', 'log_epoch', 'log_loss', 'lr', 'arg_loss']
>>> c.variable_for("log_epoch"), c.variable_for("log_loss"), c.variable_for("lr")
('epoch', 'loss', None)
>>> c.ambiguity("LOSS")
'column LOSS of logs is ambiguous: runs logged a value named loss and have an arg loss; write log_loss for the logged values or arg_loss for the arg'
>>> Catalog(names=frozenset({"Loss", "loss"})).logs_columns()
['run_id', 'Loss', 'loss_2']
>>> Catalog(names=frozenset({"epoch", "log_epoch"}), loops=("epoch",)).logs_columns()
['run_id', 'epoch', 'log_epoch_2', 'log_epoch']
>>> c.closest("los")
['loss']
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cached_property

RECORDS_HEAD = ("run_id", "lsn")
RECORDS_TAIL = (
    "name",
    "value",
    "value_text",
    "source",
    "logged_at",
    "seq",
    "replay_id",
    "diverged",
)
RECORDS_FIXED = RECORDS_HEAD + RECORDS_TAIL
RUNS_COLUMNS = (
    "run_id",
    "script",
    "status",
    "args",
    "started_at",
    "ended_at",
    "source_hash",
    "git",
    "values",
    "checkpoints",
    "error",
    "command",
    "python",
    "torch",
    "host",
    "rank",
    "world_size",
    "degraded",
)
CHECKPOINTS_HEAD = ("ckpt_id", "run_id")
CHECKPOINTS_TAIL = ("phase", "ctx", "raw_bytes", "stored_bytes", "write_seconds", "lsn", "seq")


@dataclass(frozen=True)
class Catalog:
    """Logged names, loop names (outermost first, in order of appearance), arg names, runs."""

    names: frozenset[str] = frozenset()
    loops: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    extra_names: frozenset[str] = field(default=frozenset())

    @cached_property
    def _name_columns(self) -> dict[str, str]:
        # DuckDB column names are case-insensitive: "Loss" and "loss" cannot both be columns.
        reserved = {c.lower() for c in ("run_id", *self.loops, *self.args)}
        taken = set(reserved)
        out = {}
        for name in self.all_names():  # first the names that keep their own
            if name.lower() not in taken:
                out[name] = name
                taken.add(name.lower())
        logged = {n.lower() for n in self.all_names()}
        for name in self.all_names():
            if name not in out:
                base = f"log_{name}" if name.lower() in reserved else name
                out[name] = _unique(base, taken, avoid=logged)
        return out

    @cached_property
    def _arg_columns(self) -> dict[str, str]:
        taken = {c.lower() for c in ("run_id", *self.loops, *self._name_columns.values())}
        logged = {n.lower() for n in self.all_names()}
        out = {}
        for arg in self.args:
            clash = arg.lower() in taken or arg.lower() in logged
            out[arg] = _unique(f"arg_{arg}" if clash else arg, taken, avoid=logged)
        return out

    @cached_property
    def _ambiguous(self) -> dict[str, tuple[str, str]]:
        """Lowercased names both logged and an arg -> (logged name, arg name); a loop or
        `run_id` column of that name keeps it, unambiguously."""
        args = {a.lower(): a for a in self.args}
        fixed = {c.lower() for c in ("run_id", *self.loops)}
        return {
            n.lower(): (n, args[n.lower()])
            for n in self.all_names()
            if n.lower() in args and n.lower() not in fixed
        }

    def ambiguity(self, column: str) -> str | None:
        """The error for naming `column` of `logs` bare when it is both logged and an arg."""
        found = self._ambiguous.get(column.lower())
        if found is None:
            return None
        name, arg = found
        return (
            f"column {column} of logs is ambiguous: runs logged a value named {name} and have "
            f"an arg {arg}; write {self.logs_name_column(name)} for the logged values or "
            f"{self.logs_arg_column(arg)} for the arg"
        )

    def logs_name_column(self, name: str) -> str:
        """The `logs` column that holds logged name `name`."""
        return self._name_columns.get(name) or (f"log_{name}" if name in self.loops else name)

    def logs_arg_column(self, arg: str) -> str:
        """The `logs` column that holds arg `arg`."""
        return self._arg_columns.get(arg, arg)

    def records_loop_column(self, loop: str) -> str:
        return f"loop_{loop}" if loop in RECORDS_FIXED else loop

    def all_names(self) -> list[str]:
        """Logged names plus names a query asked for that no run logged yet (NULL columns)."""
        return sorted(self.names | self.extra_names)

    def logs_columns(self) -> list[str]:
        return [
            "run_id",
            *self.loops,
            *(self.logs_name_column(n) for n in self.all_names()),
            *(self.logs_arg_column(a) for a in self.args),
        ]

    def records_columns(self) -> list[str]:
        loops = [self.records_loop_column(loop) for loop in self.loops]
        return [*RECORDS_HEAD, *loops, *RECORDS_TAIL]

    def checkpoints_columns(self) -> list[str]:
        loops = [loop for loop in self.loops if loop not in CHECKPOINTS_HEAD + CHECKPOINTS_TAIL]
        return [*CHECKPOINTS_HEAD, *loops, *CHECKPOINTS_TAIL]

    def view_columns(self) -> dict[str, list[str]]:
        return {
            "logs": self.logs_columns(),
            "records": self.records_columns(),
            "runs": list(RUNS_COLUMNS),
            "checkpoints": self.checkpoints_columns(),
        }

    def variable_for(self, logs_column: str) -> str | None:
        """The logged name behind a `logs` column, or None for run_id, loop and arg columns.

        An unknown column is taken to be a variable not logged yet (a hindsight candidate).
        """
        lowered = logs_column.lower()
        for name in self.all_names():
            if self.logs_name_column(name).lower() == lowered:
                return name
        fixed = {"run_id", *self.loops, *(self.logs_arg_column(a) for a in self.args)}
        if lowered in {f.lower() for f in fixed}:
            return None
        return logs_column

    def loop_for(self, column: str, view: str) -> str | None:
        """The loop name behind a column of `view`, `run_id` for run_id, else None."""
        lowered = column.lower()
        if lowered == "run_id":
            return "run_id"
        for loop in self.loops:
            exposed = self.records_loop_column(loop) if view == "records" else loop
            if exposed.lower() == lowered:
                return loop
        return None

    def closest(self, name: str, n: int = 3) -> list[str]:
        """Known logged names that look like `name` (for "did you mean ...?")."""
        return difflib.get_close_matches(name, sorted(self.names), n=n, cutoff=0.6)


def _unique(column: str, taken: set[str], avoid: set[str] | frozenset[str] = frozenset()) -> str:
    """`column`, or `column_2`, `column_3`... if taken or in `avoid` (case-insensitively);
    marks it taken.

    >>> taken = {"loss"}
    >>> _unique("Loss", taken), _unique("loss", taken, avoid={"loss_3"}), sorted(taken)
    ('Loss_2', 'loss_4', ['loss', 'loss_2', 'loss_4'])
    """
    base, k = column, 2
    while column.lower() in taken or column.lower() in avoid:
        column, k = f"{base}_{k}", k + 1
    taken.add(column.lower())
    return column
