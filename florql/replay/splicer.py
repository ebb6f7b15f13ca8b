"""Splicing a script's new `florql.log` statements into the code a run recorded.

The recorded code is what replays, because it produced the checkpoints; the current code only
donates its new log statements (and the helpers they read). A new log statement logs a literal
name no log call in the recorded sources logs. Supported shapes:

1. `florql.log("name", expr)` as a statement (the primary case);
2. `x = florql.log("name", expr)` where the recorded code neither binds nor reads `x`;
3. `if`, `with` and `for` blocks holding only statements of shapes 1-3 and 5 (`with
   torch.no_grad():`, `for p in model.parameters():`), whose own variables the recorded code
   does not use; a later new statement may read what an earlier one assigned;
4. a statement of the recorded code with a `florql.log("name", e)` wrapped around one of its
   expressions (`loss = florql.log("loss2", crit(y, t))`): since `log` returns its value, the
   wrapped statement replaces its recorded twin and computes the same thing;
5. helper statements: new assignments, imports, call statements (`acc.append(x)`) and small
   new `if`/`for`/`with` blocks of them that log nothing, when a wanted new log statement (or
   another helper) reads what they assign or change (`dataflow.demand`), and they assign no
   name the recorded code uses (else they are an other edit).

Every spliced statement must only observe the recorded run: `effects.py` refuses those that
change its state or draw random numbers, and `dataflow.carried` those reading a helper value
left by an earlier outer-loop iteration (a replay does not run the iterations it skips).

Placement: the enclosing blocks (functions by name, `florql.loop`s by loop name, other
compound statements by their header) are matched between the two trees; inside the innermost
block the statements other than new ones are aligned with `difflib` and the new statement goes
between the counterparts of its nearest unchanged neighbours. When its neighbours changed so
that two positions are possible, or its block has no recorded counterpart, or it reads a name
neither the recorded code nor an earlier new statement defines in that scope, `EditError` (a
`ReplayError`, exit code 2) names its file and line. Every other difference is listed in
`Splice.other_edits` and not replayed.

The spliced text keeps the recorded text byte for byte outside the inserted lines (so line
numbers in replay tracebacks match the recorded file); the result is re-parsed and compared
with the intended tree, falling back to `ast.unparse` when a one-line block defeats the text
edit.

>>> rec = 'import florql\\nfor e in florql.loop("epoch", range(2)):\\n    w = e * 2\\n    florql.log("loss", w)\\n'
>>> cur = rec.replace('w = e * 2\\n', 'w = e * 2\\n    florql.log("w2", w * w)\\n')
>>> s = splice({"train.py": rec}, {"train.py": cur})
>>> print(s.sources["train.py"], end="")
import florql
for e in florql.loop("epoch", range(2)):
    w = e * 2
    florql.log("w2", w * w)
    florql.log("loss", w)
>>> s.statements[0].names, s.statements[0].loops, s.statements[0].recorded_line
(('w2',), ('epoch',), 4)
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from florql.errors import EditError
from florql.replay.dataflow import (
    HELPER_SIMPLE,
    Flow,
    binds,
    carried,
    carried_reason,
    demand,
    flow,
    used,
)
from florql.replay.early_exit import add_iteration_exit
from florql.replay.effects import Imports, changed_names, effect, loader_names, owned_after
from florql.replay.syntax import (
    BUILTIN_NAMES,
    Aliases,
    bound_names,
    child_bodies,
    contains_new_log,
    free_names,
    header_key,
    is_compound,
    logged_name,
    logged_names,
    loop_name,
    own_parts,
    unwrapped_dump,
)

_AMBIGUOUS = -1


@dataclass(frozen=True)
class NewStatement:
    """One spliced statement.

    `loops` are the `florql.loop` names around it, outermost first ("" for a loop that is not a
    florql loop), following calls of the function it sits in when those all come from one loop
    context; None when that cannot be known statically (the planner then re-executes).
    `after_inner` is True when, within an iteration of its outermost florql loop, it runs after
    a statement holding the first inner florql loop (directly in the outer body, or as the
    call site of its function): a checkpoint taken when that inner loop ended can replay it
    without running the inner loop, even when it sits in a later loop (an evaluation loop).
    """

    names: tuple[str, ...]
    file: str
    line: int
    recorded_line: int | None
    loops: tuple[str, ...] | None
    function: str | None
    text: str
    after_inner: bool = False  # runs after the first inner loop of its outer iteration


@dataclass
class Splice:
    """The recorded sources with new statements spliced in, and what else changed."""

    sources: dict[str, str]
    statements: list[NewStatement] = field(default_factory=list)
    other_edits: list[str] = field(default_factory=list)
    code_hash: str = ""

    @property
    def names(self) -> set[str]:
        return {n for s in self.statements for n in s.names}


@dataclass
class _Ctx:
    loops: tuple[str, ...]
    function: str | None
    scopes: tuple[ast.AST, ...]  # recorded module and enclosing function defs
    top_after: bool = False  # a florql loop came before, at the function's (module's) top level
    outer_after: bool = False  # ... in the body of the outermost florql loop of this function
    # For new helper variables (see dataflow.Flow): inside one iteration of the outer loop, the loop's
    # name, and the helper names surely assigned earlier in that iteration.
    in_outer: bool = False
    outer_name: str = ""
    assigned: frozenset[str] = frozenset()


def new_names(recorded: Mapping[str, str], current: Mapping[str, str | None]) -> set[str]:
    """Names logged by literal in `current` and nowhere in `recorded`.

    >>> sorted(new_names({"a.py": 'florql.log("x", 1)'}, {"a.py": 'florql.log("x", 1)\\nflorql.log("y", 2)'}))
    ['y']
    """
    old = set().union(*(logged_names(_parse(t, p)) for p, t in recorded.items()))
    new = set().union(*(logged_names(_parse(t, p)) for p, t in current.items() if t is not None))
    return new - old


def splice(
    recorded: Mapping[str, str],
    current: Mapping[str, str | None],
    want: set[str] | None = None,
) -> Splice:
    """Splice the new statements of `current` that log names in `want` (default: all new ones).

    Args:
        recorded: {relative path: text} as recorded with the run.
        current: {relative path: text or None when the file is gone} for the same paths.
        want: restrict to statements logging at least one of these names.
    Raises:
        EditError: a wanted statement cannot be placed, or reads a name the recorded code
            does not define there; the message names file and line.
    """
    fresh = new_names(recorded, current)
    targets = fresh if want is None else fresh & set(want)
    out = Splice(sources=dict(recorded))
    for path in sorted(recorded):
        cur = current.get(path)
        if cur is None:
            out.other_edits.append(f"{path}: missing now; replaying the recorded version")
            continue
        if cur == recorded[path]:
            continue
        f = _FileSplice(path, recorded[path], cur, fresh, targets)
        f.run()
        out.sources[path] = _with_iteration_exit(f.text(), f.statements)
        out.statements.extend(f.statements)
        out.other_edits.extend(f.other_edits())
    out.code_hash = code_hash(out.sources)
    return out


def _with_iteration_exit(text: str, statements: list[NewStatement]) -> str:
    """Add early_exit's guard when every new statement here is a per-epoch one of one loop.

    A helper outside every loop (logging nothing, so before the outer loop: one after it
    serves only statements after it) runs before any iteration and does not count.
    """
    statements = [s for s in statements if s.names or s.loops != ()]
    outer = {s.loops[0] if s.loops else None for s in statements}
    if (
        not statements
        or len(outer) != 1
        or None in outer
        or not all(s.after_inner for s in statements)
    ):
        return text
    names = {n for s in statements for n in s.names}
    return add_iteration_exit(text, names, outer.pop())  # type: ignore[arg-type]


def code_hash(sources: Mapping[str, str]) -> str:
    """A short content hash of a set of sources (order-independent)."""
    h = hashlib.sha256()
    for path in sorted(sources):
        h.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return h.hexdigest()[:16]


def _parse(text: str, path: str) -> ast.Module:
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as e:
        raise EditError(
            f"{path} line {e.lineno}: cannot parse ({e.msg}); fix the syntax error and retry"
        ) from None


class _FileSplice:
    def __init__(self, path: str, rec: str, cur: str, fresh: set[str], targets: set[str]) -> None:
        self.path = path
        self.rec_text, self.cur_text = rec, cur
        self.rec_tree, self.cur_tree = _parse(rec, path), _parse(cur, path)
        self.aliases = Aliases.of(self.rec_tree).merged(Aliases.of(self.cur_tree))
        self.fresh, self.targets = fresh, targets
        self.inserts: list[tuple[list[ast.stmt], int, ast.stmt, _Ctx]] = []
        self.replaces: list[tuple[ast.stmt, ast.stmt, _Ctx]] = []
        self.statements: list[NewStatement] = []
        self.handled_lines: set[int] = set()  # current lines that belong to spliced statements
        self.unit_bound: dict[int, set[str]] = {}  # names spliced statements bind, per scope
        self.looping = looping_functions(self.rec_tree, self.aliases)
        self.imports = Imports.of(self.rec_tree, self.cur_tree)
        self.loaders = loader_names(self.rec_tree, self.imports)
        self.owned: dict[int, set[str]] = {}  # helper names bound only to new objects, per scope
        self.flows: list[Flow] = []
        self.clashes: dict[str, str] = {}  # helper name -> why its statement was not spliced
        self.demand = demand(self.cur_tree, self.rec_tree, self.aliases, targets)
        self.demand_any = demand(self.cur_tree, self.rec_tree, self.aliases, fresh)

    # -- matching -------------------------------------------------------------------------
    def run(self) -> None:
        self._body(self.cur_tree.body, self.rec_tree.body, _Ctx((), None, (self.rec_tree,)))
        self._check_carried()

    def _sig(self, stmt: ast.stmt, current: bool) -> str:
        if is_compound(stmt):
            return header_key(stmt, self.aliases)
        if current:
            return unwrapped_dump(stmt, self.aliases, self.fresh)
        return ast.dump(stmt)

    def _is_unit(self, stmt: ast.stmt, rec_sigs: set[str], helpers: bool = True) -> bool:
        if isinstance(stmt, ast.Expr):
            return logged_name(stmt.value, self.aliases) in self.fresh
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            return (
                isinstance(stmt.targets[0], ast.Name)
                and logged_name(stmt.value, self.aliases) in self.fresh
                and self._sig(stmt, True) not in rec_sigs
            )
        if isinstance(stmt, (ast.If, ast.With, ast.For)) and not any(
            contains_new_log(p, self.aliases, self.fresh) for p in own_parts(stmt)
        ):
            inner = [s for _, body in child_bodies(stmt) for s in body]
            if not contains_new_log(stmt, self.aliases, self.fresh):
                return False
            if all(self._is_unit(s, set(), helpers=False) for s in inner):
                return True
            # With helper statements inside, a block whose header the recorded code has here is
            # the recorded block with new statements in it, not a new block.
            return (
                helpers
                and self._sig(stmt, True) not in rec_sigs
                and all(self._is_unit(s, set()) or self._is_helper(s, set()) for s in inner)
            )
        return False

    def _is_helper(self, stmt: ast.stmt, rec_sigs: set[str]) -> bool:
        """A new statement shaped like a helper of log statements: an assignment, an import, a
        call statement (`acc.append(x)`), or an `if`/`for`/`with` block of those; logging
        nothing itself (a block that logs is a unit, `_is_unit`)."""
        if any(logged_name(n, self.aliases) is not None for n in ast.walk(stmt)):
            return False
        if isinstance(stmt, HELPER_SIMPLE) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
        ):
            return self._sig(stmt, True) not in rec_sigs
        if isinstance(stmt, (ast.If, ast.With, ast.For)) and self._sig(stmt, True) not in rec_sigs:
            return all(self._is_helper(s, set()) for _, body in child_bodies(stmt) for s in body)
        return False

    def _kind(self, stmt: ast.stmt, rec_sigs: set[str], ctx: _Ctx) -> str:
        """ "place", "skip" (new, but for names not asked for now) or "" (not a new statement)."""
        if self._is_unit(stmt, rec_sigs):
            return "place" if self._wanted(stmt) else "skip"
        if not self._is_helper(stmt, rec_sigs):
            return ""
        changes = changed_names(stmt)
        if not changes & self.demand_any:
            return ""  # no new log reads it: an edit the replay does not run
        clash = sorted(binds(stmt) & used(ctx.scopes[-1]))
        if clash:
            for name in binds(stmt) - set(clash):
                self.clashes[name] = (
                    f"line {stmt.lineno} assigns it, but also assigns {', '.join(clash)}, which "
                    "the recorded code uses, so that line is not replayed; use new variable names"
                )
            return ""
        return "place" if changes & self.demand else "skip"

    def _wanted(self, stmt: ast.stmt) -> bool:
        return bool(self._names_in(stmt) & self.targets)

    def _names_in(self, node: ast.AST) -> set[str]:
        return {n for n in map(lambda x: logged_name(x, self.aliases), ast.walk(node)) if n} & (
            self.fresh
        )

    def _body(self, cur_body: list[ast.stmt], rec_body: list[ast.stmt], ctx: _Ctx) -> None:
        rec_sigs = [self._sig(s, False) for s in rec_body]
        kinds = {id(s): self._kind(s, set(rec_sigs), ctx) for s in cur_body}
        rest = [s for s in cur_body if not kinds[id(s)]]
        cur_sigs = [self._sig(s, True) for s in rest]
        ops = difflib.SequenceMatcher(None, cur_sigs, rec_sigs, autojunk=False).get_opcodes()
        match = _matches(ops, rest, rec_body, self.aliases)
        gap = 0
        assigned = ctx.assigned  # helper names surely assigned by now in this iteration
        # In source order, so that a statement sees the helpers spliced before it.
        for s in cur_body:
            if not kinds[id(s)]:
                same = gap in match and cur_sigs[gap] == rec_sigs[match[gap]]
                self._into(
                    s, gap, match, rec_body, same, dataclasses.replace(ctx, assigned=assigned)
                )
                gap += 1
            elif kinds[id(s)] == "place":
                pos = _position(ops, gap)
                here = dataclasses.replace(self._after(ctx, rec_body, pos), assigned=assigned)
                self._place(s, rec_body, pos, here)
                assigned = flow([s], assigned)[1]
            else:  # a new statement for names nobody asked for: not an edit worth a warning
                self.handled_lines.update(range(_first_line(s), (s.end_lineno or s.lineno) + 1))

    def _into(
        self,
        s: ast.stmt,
        i: int,
        match: dict[int, int],
        rec_body: list[ast.stmt],
        same: bool,
        ctx: _Ctx,
    ) -> None:
        """Descend into current statement `s` (index `i` of the non-new ones) when it holds
        new statements, through its recorded counterpart."""
        wanted_log = contains_new_log(s, self.aliases, self.fresh) and self._wanted(s)
        j = match.get(i)
        if j is None and wanted_log:
            raise self._error(
                s,
                "the block or statement around it has no counterpart in the recorded code; keep the surrounding code as recorded",
            )
        if j is not None and (wanted_log or self._holds_helpers(s)):
            self._descend(s, rec_body[j], same, self._after(ctx, rec_body, j))

    def _holds_helpers(self, stmt: ast.stmt) -> bool:
        """Whether a compound statement may hold new helper statements that asked-for logs read."""
        return is_compound(stmt) and any(
            changed_names(s) & self.demand_any for _, body in child_bodies(stmt) for s in body
        )

    def _after(self, ctx: _Ctx, rec_body: list[ast.stmt], pos: int) -> _Ctx:
        if pos == _AMBIGUOUS:
            return ctx
        return _advance(ctx, rec_body[:pos], self.aliases, self.looping)

    def _descend(self, cur: ast.stmt, rec: ast.stmt, same: bool, ctx: _Ctx) -> None:
        if any(contains_new_log(p, self.aliases, self.fresh) for p in own_parts(cur)):
            if is_compound(cur) or not same:
                raise self._error(
                    cur,
                    "a log call inside this statement can only be spliced when the rest of the statement is unchanged",
                )
            self.replaces.append((rec, cur, ctx))
            self._check_names(cur, ctx, wrapped=True)
            return
        inner = self._iteration_ctx(rec, _inner_ctx(cur, rec, ctx, self.aliases), ctx)
        rec_bodies = dict(child_bodies(rec))
        for label, body in child_bodies(cur):
            if label not in rec_bodies:
                raise self._error(
                    body[0], f"its block ({label}) does not exist in the recorded code"
                )
            self._body(body, rec_bodies[label], inner)

    def _place(self, unit: ast.stmt, rec_body: list[ast.stmt], pos: int, ctx: _Ctx) -> None:
        if pos == _AMBIGUOUS:
            raise self._error(
                unit,
                "the statements next to it changed, so its place in the recorded code is ambiguous; put it next to a statement that is unchanged since the run was recorded",
            )
        self._check_names(unit, ctx, wrapped=False)
        self._check_effects(unit, ctx)
        self.inserts.append((rec_body, pos, unit, ctx))

    def _check_names(self, stmt: ast.stmt, ctx: _Ctx, wrapped: bool) -> None:
        scope = ctx.scopes[-1]
        defined = set(BUILTIN_NAMES) | self.unit_bound.get(id(scope), set())
        for sc in ctx.scopes:
            defined |= bound_names(sc)
        missing = sorted(free_names(stmt) - defined)
        if missing:
            hints = [f" ({m}: {self.clashes[m]})" for m in missing if m in self.clashes]
            raise self._error(
                stmt,
                f"it reads {', '.join(missing)}, which the recorded code does not define there "
                "and no new statement before it assigns; log values the recorded code computes, "
                "or assign them first in new statements" + "".join(hints),
            )
        if wrapped:
            return
        bound = binds(stmt)
        clash = sorted(bound & used(scope))
        if clash:
            raise self._error(
                stmt,
                f"it assigns {', '.join(clash)}, which the recorded code also uses, so splicing it "
                "would change what the run computed; use a new variable name",
            )
        self.unit_bound.setdefault(id(scope), set()).update(bound)

    def _check_effects(self, stmt: ast.stmt, ctx: _Ctx) -> None:
        """Refuse a new statement that changes the recorded run's state or draws random numbers
        (florql/replay/effects.py); otherwise remember which helper names it owns and how it
        reads and changes them (for `_check_carried`)."""
        scope = id(ctx.scopes[-1])
        owned = owned_after([stmt], self.owned.get(scope, set()), self.imports)
        why = effect(stmt, owned, self.imports, self.loaders)
        if why:
            raise self._error(stmt, why)
        self.owned[scope] = owned
        reads = flow([stmt], ctx.assigned)[0]
        self.flows.append(
            Flow(
                stmt,
                scope,
                frozenset(reads),
                frozenset(changed_names(stmt)),
                ctx.in_outer,
                ctx.outer_name,
            )
        )

    def _check_carried(self) -> None:
        """Refuse a new statement that reads a helper value an earlier outer-loop iteration
        left (`dataflow.carried`)."""
        found = carried(self.flows)
        if found is not None:
            flow_, names, loop = found
            raise self._error(flow_.stmt, carried_reason(names, loop))

    def _iteration_ctx(self, rec: ast.stmt, inner: _Ctx, outer: _Ctx) -> _Ctx:
        """`inner` (the context inside `rec`) with where outer-loop iterations begin marked.

        A function called inside a florql loop starts fresh locals at each call: all of it is
        within one iteration. Otherwise the first florql loop of a scope is where iterations
        begin (for a function called from several loop contexts, conservatively so too).
        """
        if isinstance(rec, (ast.FunctionDef, ast.AsyncFunctionDef)):
            site = _call_site(self.rec_tree, rec.name, self.aliases, 0)
            per_call = site is not None and _depth(site[0]) > 0
            first = next((n for n in site[0] if n), "") if per_call and site else ""
            return dataclasses.replace(
                inner, in_outer=per_call, outer_name=first, assigned=frozenset()
            )
        loop = loop_name(rec, self.aliases)
        if loop and not outer.in_outer:
            return dataclasses.replace(inner, in_outer=True, outer_name=loop, assigned=frozenset())
        return inner

    def _error(self, stmt: ast.stmt, why: str) -> EditError:
        src = (ast.get_source_segment(self.cur_text, stmt) or "").splitlines()[0:1]
        shown = f" `{src[0].strip()}`" if src else ""
        return EditError(f"{self.path} line {stmt.lineno}: cannot replay{shown}: {why}")

    # -- output -------------------------------------------------------------------------
    def text(self) -> str:
        rec_lines = self.rec_text.splitlines(keepends=True)
        if rec_lines and not rec_lines[-1].endswith("\n"):
            rec_lines[-1] += "\n"
        before: dict[int, list[tuple[ast.stmt, list[str]]]] = {}
        replaced: dict[int, tuple[int, ast.stmt, list[str]]] = {}
        for rec_body, pos, unit, _ in self.inserts:
            anchor = rec_body[pos - 1] if pos > 0 else rec_body[0]
            at = anchor.end_lineno if pos > 0 else _first_line(anchor) - 1
            indent = rec_lines[anchor.lineno - 1][: anchor.col_offset]
            before.setdefault(at or 0, []).append((unit, self._lines(unit, indent)))
        for rec, cur, _ in self.replaces:
            indent = rec_lines[rec.lineno - 1][: rec.col_offset]
            replaced[rec.lineno - 1] = (rec.end_lineno or rec.lineno, cur, self._lines(cur, indent))
        out: list[str] = []
        placed: dict[int, int] = {}
        i = 0
        while i <= len(rec_lines):
            for unit, lines in before.get(i, []):
                placed[id(unit)] = len(out) + 1
                out.extend(lines)
            if i == len(rec_lines):
                break
            if i in replaced:
                end, cur, lines = replaced[i]
                placed[id(cur)] = len(out) + 1
                out.extend(lines)
                i = end
            else:
                out.append(rec_lines[i])
                i += 1
        text = "".join(out)
        expected = self._intended_tree()
        if _parses_to(text, expected):
            self._record(placed)
            return text
        self._record({})
        return ast.unparse(expected) + "\n"

    def _lines(self, stmt: ast.stmt, indent: str) -> list[str]:
        cur_lines = self.cur_text.splitlines()
        first, last = _first_line(stmt), stmt.end_lineno or stmt.lineno
        self.handled_lines.update(range(first, last + 1))
        raw = cur_lines[first - 1 : last]
        strip = stmt.col_offset
        return [
            indent + (ln[strip:] if ln[:strip].isspace() or not ln[:strip] else ln.lstrip()) + "\n"
            for ln in raw
        ]

    def _intended_tree(self) -> ast.Module:
        """The recorded tree with the splices applied at the node level (the text's oracle)."""
        tree = copy.deepcopy(self.rec_tree)
        twin = {
            id(a): b for a, b in zip(_all_bodies(self.rec_tree), _all_bodies(tree), strict=True)
        }
        where = {id(s): (id(b), k) for b in _all_bodies(self.rec_tree) for k, s in enumerate(b)}
        for rec, cur, _ in self.replaces:
            body_id, k = where[id(rec)]
            twin[body_id][k] = cur
        grouped: dict[int, dict[int, list[ast.stmt]]] = {}
        for rec_body, pos, unit, _ in self.inserts:
            grouped.setdefault(id(rec_body), {}).setdefault(pos, []).append(unit)
        for body_id, by_pos in grouped.items():
            for pos in sorted(by_pos, reverse=True):
                twin[body_id][pos:pos] = by_pos[pos]
        return tree

    def _record(self, placed: dict[int, int]) -> None:
        for _, _, unit, ctx in self.inserts:
            self.statements.append(self._statement(unit, ctx, placed.get(id(unit))))
        for _, cur, ctx in self.replaces:
            self.statements.append(self._statement(cur, ctx, placed.get(id(cur))))
        self.statements.sort(key=lambda s: s.line)

    def _statement(self, stmt: ast.stmt, ctx: _Ctx, line: int | None) -> NewStatement:
        where = _through(
            self.rec_tree, ctx.function, ctx.loops, ctx.top_after, ctx.outer_after, self.aliases, 0
        )
        loops, after = (None, False) if where is None else where
        text = ast.get_source_segment(self.cur_text, stmt) or ast.unparse(stmt)
        names = tuple(sorted(self._names_in(stmt)))
        return NewStatement(names, self.path, stmt.lineno, line, loops, ctx.function, text, after)

    def _is_log_line(self, text: str) -> bool:
        try:
            tree = ast.parse(text.strip())
        except SyntaxError:
            return False
        return (
            len(tree.body) == 1
            and isinstance(tree.body[0], ast.Expr)
            and logged_name(tree.body[0].value, self.aliases) is not None
        )

    def other_edits(self) -> list[str]:
        rec = _code_lines(self.rec_text.splitlines(), set())
        cur = _code_lines(self.cur_text.splitlines(), self.handled_lines)
        ops = difflib.SequenceMatcher(
            None, [t for _, t in cur], [t for _, t in rec], autojunk=False
        )
        edits = []
        for tag, i1, i2, j1, j2 in ops.get_opcodes():
            if tag == "equal":
                continue
            # Opcodes turn the current lines (a) into the recorded ones (b).
            if tag in ("replace", "delete"):
                for n, t in cur[i1:i2]:
                    # A new log statement of a name not asked for now is not an edit the
                    # replay ignores: a request for that name replays it.
                    if tag == "delete" and self._is_log_line(t):
                        continue
                    edits.append(f"{self.path}:{n} now: `{_short(t)}`")
            if tag in ("replace", "insert"):
                for n, t in rec[j1:j2]:
                    edits.append(f"{self.path}:{n} recorded: `{_short(t)}`")
        return edits


def _matches(
    ops: list, rest: list[ast.stmt], rec_body: list[ast.stmt], aliases: Aliases
) -> dict[int, int]:
    """Current index -> recorded index for statements that correspond one to one.

    Equal signatures correspond; inside a same-sized changed run, statements of the same kind
    correspond by position (an edited `if` header keeps its body), except florql loops, which
    are identified by their loop name only.
    """
    match = {}
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                cur, rec = rest[i1 + k], rec_body[j1 + k]
                named = bool(loop_name(cur, aliases)) or bool(loop_name(rec, aliases))
                if tag == "equal" or (type(cur) is type(rec) and not named):
                    match[i1 + k] = j1 + k
    return match


def _position(ops: list, gap: int) -> int:
    """Where gap `gap` of the current sequence falls in the recorded one, or _AMBIGUOUS.

    >>> ops = difflib.SequenceMatcher(None, "ac", "abc").get_opcodes()
    >>> _position(ops, 0), _position(ops, 1), _position(ops, 2)
    (0, -1, 3)
    """
    if not ops:
        return 0
    found = set()
    for tag, i1, i2, j1, j2 in ops:
        if not i1 <= gap <= i2:
            continue
        if tag == "equal":
            found.add(j1 + gap - i1)
        elif tag == "insert":
            found.add(j1)
        elif tag == "delete":
            found.update((j1, j2))
        elif gap == i1:
            found.add(j1)
        elif gap == i2:
            found.add(j2)
        elif i2 - i1 == j2 - j1:
            found.add(j1 + gap - i1)
        else:
            found.add(_AMBIGUOUS)
    return found.pop() if len(found) == 1 else _AMBIGUOUS


def _inner_ctx(cur: ast.stmt, rec: ast.stmt, ctx: _Ctx, aliases: Aliases) -> _Ctx:
    name = loop_name(cur, aliases)
    if isinstance(rec, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _Ctx((), rec.name, (*ctx.scopes, rec))
    loops = ctx.loops + (name,) if name is not None else ctx.loops
    return dataclasses.replace(ctx, loops=loops)


def _depth(loops: tuple[str, ...]) -> int:
    """How many florql loops (not plain ones) enclose a position."""
    return sum(1 for name in loops if name)


def _advance(ctx: _Ctx, before: list[ast.stmt], aliases: Aliases, looping: frozenset[str]) -> _Ctx:
    """`ctx` at a position that `before` (its earlier siblings) precede."""
    after = any(_has_florql_loop(r, aliases, looping) for r in before)
    depth = _depth(ctx.loops)
    return dataclasses.replace(
        ctx,
        top_after=ctx.top_after or (after and depth == 0),
        outer_after=ctx.outer_after or (after and depth == 1),
    )


def _has_florql_loop(
    stmt: ast.AST, aliases: Aliases, looping: frozenset[str] = frozenset()
) -> bool:
    """Whether `stmt` runs a florql loop: holds one, or calls a function of `looping`."""
    for n in ast.walk(stmt):
        if isinstance(n, ast.stmt) and loop_name(n, aliases):
            return True
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in looping:
            return True
    return False


def looping_functions(tree: ast.Module, aliases: Aliases) -> frozenset[str]:
    """Module-level functions that run a florql loop, directly or through each other."""
    defs = {d.name: d for d in tree.body if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, d in defs.items():
            if name not in found and _has_florql_loop(d, aliases, frozenset(found)):
                found.add(name)
                changed = True
    return frozenset(found)


def _call_site(
    tree: ast.Module, function: str, aliases: Aliases, depth: int
) -> tuple[tuple[str, ...], bool] | None:
    """(loops, after_inner) of every call of `function` in `tree`, if all calls agree."""
    if depth > 4:
        return None
    found: set[tuple[tuple[str, ...], bool] | None] = set()
    looping = looping_functions(tree, aliases)

    def visit(body: list[ast.stmt], ctx: _Ctx) -> None:
        for idx, stmt in enumerate(body):
            here = _advance(ctx, body[:idx], aliases, looping)
            for part in own_parts(stmt) if is_compound(stmt) else [stmt]:
                for n in ast.walk(part):
                    if (
                        isinstance(n, ast.Call)
                        and isinstance(n.func, ast.Name)
                        and n.func.id == function
                    ):
                        found.add(
                            _through(
                                tree,
                                here.function,
                                here.loops,
                                here.top_after,
                                here.outer_after,
                                aliases,
                                depth,
                            )  # fmt: skip
                        )
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for _, b in child_bodies(stmt):
                    visit(b, _Ctx((), stmt.name, ()))
            elif is_compound(stmt):
                name = loop_name(stmt, aliases)
                inner = (
                    dataclasses.replace(here, loops=here.loops + (name,))
                    if name is not None
                    else here
                )
                for _, b in child_bodies(stmt):
                    visit(b, inner)

    visit(tree.body, _Ctx((), None, ()))
    return found.pop() if len(found) == 1 else None


def _through(
    tree: ast.Module,
    fn: str | None,
    loops: tuple[str, ...],
    top_after: bool,
    outer_after: bool,
    aliases: Aliases,
    depth: int,
) -> tuple[tuple[str, ...], bool] | None:
    """(loops, after_inner) of a position inside function `fn` (None: module level), seen
    through the calls of `fn`; None when its callers disagree or cannot be found."""
    if fn is None:
        return loops, outer_after
    site = _call_site(tree, fn, aliases, depth + 1)
    if site is None:
        return None
    site_loops, site_after = site
    n = _depth(site_loops)
    if n == 0:  # called outside any florql loop: the function's own loops are the outer ones
        return site_loops + loops, outer_after
    if n == 1:  # called in the outer body: loops earlier in the function are inner loops
        return site_loops + loops, site_after or top_after
    return site_loops + loops, site_after


def _all_bodies(tree: ast.Module) -> list[list[ast.stmt]]:
    """Every statement list in `tree`, in a deterministic order (equal for a deep copy)."""
    out = [tree.body]
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            out.extend(b for _, b in child_bodies(node))
    return out


def _first_line(stmt: ast.stmt) -> int:
    decos = getattr(stmt, "decorator_list", None) or []
    return min([stmt.lineno, *(d.lineno for d in decos)])


def _parses_to(text: str, expected: ast.Module) -> bool:
    try:
        return ast.dump(ast.parse(text)) == ast.dump(expected)
    except SyntaxError:
        return False


def _code_lines(lines: list[str], skip: set[int]) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(lines, start=1):
        t = line.strip()
        if t and not t.startswith("#") and n not in skip:
            out.append((n, t))
    return out


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
