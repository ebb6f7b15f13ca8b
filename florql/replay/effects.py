"""What a new statement does to the recorded run's state: the splicer's side-effect guard.

Invariant 7 (docs/INTERFACES.md) asks that a replayed value equal what a from-scratch run of
the edited script logs. Replay restores the *recorded* run's checkpoints, so a new statement
may only observe: if it changed state the recorded code later reads, or drew random numbers
(shifting every later draw), a from-scratch run of the edited script would compute something
else from then on, and no checkpoint holds that. `effect()` finds such statements statically,
erring towards refusal where it cannot tell, and says how to rewrite them.

The rule: a new statement may change only objects that new statements created ("owned"
names: bound only to new lists, dicts, sets, new tensors, arithmetic results, constants). It
may not

1. assign to an attribute or subscript of anything else (`model.w = ...`, `hist[0] = ...`),
   update such a name in place (`g += 1` when `g = p.grad` aliases recorded memory), `del`, or
   declare `global` / `nonlocal`;
2. call a method that changes its receiver (in-place tensor methods ending in `_`, `step`,
   `zero_grad`, `backward`, `train`, `eval`, `append`, ...) unless the receiver is owned
   (`backward`, `step`, `train`, `eval` and their kin never, whatever the receiver);
3. draw random numbers (`random.*`, `numpy.random.*`, `torch.rand*`, dropout functions,
   `x.normal_()`, ...), call `next()`, or iterate over a name the recorded code binds to a
   `DataLoader` or an iterator (each pass over a DataLoader draws a torch seed).

Not seen: what the functions a new statement calls do inside (`evaluate(model)`, a forward
pass `model(x)` in train mode with dropout or batch norm). The README's "What replays" says so.

>>> tree = ast.parse("import torch\\ng = p.grad\\ng += 1\\nacc = []\\nacc.append(1)")
>>> imp = Imports.of(tree)
>>> owned = owned_after(tree.body, set(), imp)
>>> sorted(owned)
['acc']
>>> effect(tree.body[2], owned, imp, {}) is not None, effect(tree.body[4], owned, imp, {})
(True, None)
>>> effect(ast.parse("x = torch.randn(3)").body[0], set(), imp, {})[:32]
'it draws random numbers (torch.r'
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Methods that change their receiver; allowed only on owned objects.
_MUTATORS = _words(
    "append extend insert remove pop popitem clear update setdefault discard sort reverse "
    "write writelines seek truncate close send throw put put_nowait"
)
# Methods that change recorded training state whatever object they are called on.
_NEVER = _words(
    "step zero_grad backward train eval load_state_dict apply register_buffer "
    "register_parameter register_module register_hook register_forward_hook "
    "register_forward_pre_hook register_full_backward_hook"
)
# Methods that draw random numbers (in place or not).
_RNG_METHODS = _words(
    "normal_ uniform_ random_ bernoulli_ cauchy_ exponential_ geometric_ log_normal_ "
    "bernoulli multinomial"
)
_RNG_PREFIXES = ("random.", "numpy.random.", "torch.random.", "torch.nn.init.")
_RNG_FUNCTIONS = frozenset(
    f"torch.{f}"
    for f in _words(
        "rand randn randint randperm rand_like randn_like randint_like bernoulli multinomial "
        "normal poisson manual_seed seed dropout nn.functional.dropout nn.functional.dropout1d "
        "nn.functional.dropout2d nn.functional.dropout3d nn.functional.alpha_dropout "
        "nn.functional.feature_alpha_dropout nn.functional.gumbel_softmax nn.functional.rrelu "
        "cuda.manual_seed cuda.manual_seed_all cuda.seed cuda.seed_all cuda.set_rng_state"
    )
)
_BUILTINS_REFUSED = {
    "next": "advances an iterator the recorded code may use",
    "setattr": "changes an attribute of an object the recorded code may use",
    "delattr": "deletes an attribute of an object the recorded code may use",
    "exec": "runs code florql cannot inspect",
    "eval": "runs code florql cannot inspect",
}
# Calls whose result is a new object (safe to change); resolved dotted names.
_NEW_OBJECT_CALLS = (
    _words("list dict set float int bool str len sum abs round sorted copy.deepcopy")
    | _words("collections.Counter collections.defaultdict collections.OrderedDict")
    | frozenset(
        f"{m}.{f}"
        for m in ("torch", "numpy")
        for f in _words(
            "zeros ones empty full zeros_like ones_like full_like empty_like arange eye "
            "linspace tensor array"
        )
    )
)
_NEW_OBJECT_METHODS = _words("item tolist clone copy")
_LOADER_SUFFIXES = ("DataLoader", "Loader")
_ITER_WRAPPERS = _words("enumerate zip list tuple iter sorted tqdm")


@dataclass
class Imports:
    """Local names bound by imports, mapped to the dotted names they stand for."""

    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, *trees: ast.AST) -> Imports:
        found = cls()
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        local = a.asname or a.name.split(".")[0]
                        found.names[local] = a.name if a.asname else local
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    for a in node.names:
                        found.names[a.asname or a.name] = f"{node.module}.{a.name}"
        return found

    def resolve(self, node: ast.AST) -> str | None:
        """`np.random.rand` -> "numpy.random.rand"; None for anything but a dotted name."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.names.get(node.id, node.id))
        return ".".join(reversed(parts))


def loader_names(tree: ast.AST, imports: Imports) -> dict[str, str]:
    """{name: constructor} for names the recorded code binds to a DataLoader or an iterator."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.GeneratorExp):
            out[target.id] = "a generator expression"
        elif isinstance(value, ast.Call):
            ctor = imports.resolve(value.func) or ""
            last = ctor.rsplit(".", 1)[-1]
            if last.endswith(_LOADER_SUFFIXES) or ctor == "iter":
                out[target.id] = f"{last}(...)"
    return out


def is_new_object(value: ast.AST, imports: Imports) -> bool:
    """Whether evaluating `value` yields an object nothing else refers to."""
    if isinstance(
        value,
        (ast.Constant, ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp),
    ):
        return True
    if isinstance(value, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.JoinedStr)):
        return True  # arithmetic makes a new tensor / number / list
    if isinstance(value, ast.Call):
        if isinstance(value.func, ast.Attribute) and value.func.attr in _NEW_OBJECT_METHODS:
            return True
        return imports.resolve(value.func) in _NEW_OBJECT_CALLS
    return False


def owned_after(stmts: Iterable[ast.stmt], owned: set[str], imports: Imports) -> set[str]:
    """`owned` updated with the bindings in `stmts`: a name stays owned only while every
    binding of it is a new object (`is_new_object`); any other binding disowns it."""
    out = set(owned)
    disowned: set[str] = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                new = is_new_object(node.value, imports)
                for t in targets:
                    if isinstance(t, ast.Name):
                        (out.add if new else disowned.add)(t.id)
                    elif isinstance(t, (ast.Tuple, ast.List, ast.Starred)):
                        disowned.update(_store_names(t))  # unpacked: could be anything
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                disowned.update(_store_names(node.target))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                disowned.update(_store_names(node.optional_vars))
            elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
                disowned.add(node.target.id)
    return out - disowned


def changed_names(stmt: ast.AST) -> set[str]:
    """Names `stmt` binds or whose object it changes: assigned names (not comprehension
    variables), imports, `global` names, and the roots of assigned attributes / subscripts and
    of receivers of changing methods (`acc` in `acc.append(x)`, `acc[i] = 1`, `t.add_(1)`).

    >>> sorted(changed_names(ast.parse("for c in r:\\n    acc.append([i for i in c])\\n    h[c] = n")))
    ['acc', 'c', 'h']
    """
    out: set[str] = set()
    local: set[int] = set()
    for n in ast.walk(stmt):
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)):
            local.update(id(m) for m in ast.walk(n) if m is not n)
    for n in ast.walk(stmt):
        if id(n) in local:
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(
            n.ctx, (ast.Store, ast.Del)
        ):
            out.add(_root(n) or "")
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            m = n.func.attr
            if m in _IDENTITY_AT_INF and _max_is_inf(n):
                continue
            if m in _MUTATORS or m in _NEVER or (m.endswith("_") and not m.startswith("__")):
                out.add(_root(n.func.value) or "")
    return out - {""}


def effect(
    stmt: ast.stmt, owned: set[str], imports: Imports, loaders: dict[str, str]
) -> str | None:
    """Why `stmt` may change what the recorded run computes (a reason and a fix), or None."""
    for node in ast.walk(stmt):
        why = _node_effect(node, owned, imports, loaders)
        if why:
            return why
    return None


def _node_effect(
    node: ast.AST, owned: set[str], imports: Imports, loaders: dict[str, str]
) -> str | None:
    if isinstance(node, ast.Delete):
        return "it deletes names or items (`del`); compute the value without deleting anything"
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        kind = "global" if isinstance(node, ast.Global) else "nonlocal"
        return (
            f"it declares {', '.join(node.names)} {kind}, so it would change variables of the "
            "recorded code; use a new local variable"
        )
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        return _store_effect(node, owned)
    if isinstance(node, ast.Call):
        return _call_effect(node, owned, imports)
    if isinstance(node, (ast.For, ast.comprehension)):
        return _iteration_effect(node.iter, loaders)
    return None


def _store_effect(node: ast.Assign | ast.AugAssign | ast.AnnAssign, owned: set[str]) -> str | None:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for t in targets:
        for sub in ast.walk(t):
            if isinstance(sub, (ast.Attribute, ast.Subscript)) and isinstance(sub.ctx, ast.Store):
                root = _root(sub)
                if root not in owned:
                    return (
                        f"it assigns to `{ast.unparse(sub)}`, part of an object the recorded "
                        "code may use, so the run would compute something else; build the value "
                        "in a new variable (`xs = []`, then `xs.append(...)`)"
                    )
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        name = node.target.id
        if name not in owned:
            return (
                f"it updates {name} in place (`{name} {_op(node.op)}= ...`) and {name} may be "
                "an object the recorded code uses (a tensor it aliases); write "
                f"`{name} = {name} {_op(node.op)} ...` or start {name} from a new value "
                "(`0.0`, `[]`, `torch.zeros(...)`)"
            )
    return None


def _call_effect(node: ast.Call, owned: set[str], imports: Imports) -> str | None:
    name = imports.resolve(node.func)
    if name is not None and (name in _RNG_FUNCTIONS or name.startswith(_RNG_PREFIXES)):
        return _rng(name)
    func = node.func
    if isinstance(func, ast.Name) and func.id in _BUILTINS_REFUSED and func.id not in imports.names:
        what = _BUILTINS_REFUSED[func.id]
        return f"it calls {func.id}(), which {what}; log values the recorded code computes"
    if not isinstance(node.func, ast.Attribute):
        return None
    method = node.func.attr
    shown = f"`{_short(ast.unparse(node.func))}()`"
    if method in _RNG_METHODS:
        return _rng(shown)
    changes = method in _MUTATORS or (method.endswith("_") and not method.startswith("__"))
    if method in _IDENTITY_AT_INF and _max_is_inf(node):
        return None  # `clip_grad_norm_(ps, inf)` scales by 1.0: the norm, nothing changed
    if method in _NEVER or (changes and _root(node.func.value) not in owned):
        return (
            f"it calls {shown}, which may change state the recorded code uses, so a "
            "from-scratch run of the edited script would compute something else; compute the "
            "value without changing anything (an out-of-place `x.add(y)` instead of `x.add_(y)`)"
        )
    return None


# In-place clipping that leaves every value as it was when its bound is infinite (the usual
# way to read a gradient norm): the scale factor is clamped to exactly 1.0.
_IDENTITY_AT_INF = frozenset({"clip_grad_norm_"})


def _max_is_inf(call: ast.Call) -> bool:
    """Whether the call's `max_norm` (second argument or keyword) is infinity, spelled
    `inf`, `math.inf`, `np.inf`, `torch.inf` or `float("inf")`."""
    arg = call.args[1] if len(call.args) > 1 else None
    arg = next((k.value for k in call.keywords if k.arg == "max_norm"), arg)
    if isinstance(arg, ast.Name):
        return arg.id == "inf"
    if isinstance(arg, ast.Attribute):
        return arg.attr == "inf"
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "float":
        first = arg.args[0] if arg.args else None
        return isinstance(first, ast.Constant) and str(first.value).lower() in ("inf", "+inf")
    return False


def _iteration_effect(iterable: ast.AST, loaders: dict[str, str]) -> str | None:
    candidates = [iterable]
    func = iterable.func if isinstance(iterable, ast.Call) else None
    if isinstance(iterable, ast.Call) and isinstance(func, ast.Name) and func.id in _ITER_WRAPPERS:
        candidates += iterable.args
    for c in candidates:
        if isinstance(c, ast.Name) and c.id in loaders:
            return (
                f"it iterates over {c.id}, which the recorded code makes with {loaders[c.id]}: "
                "each pass over a DataLoader draws a torch random seed and an iterator is used "
                "up, which changes what the run computes afterwards; log values the recorded "
                "code computes while it iterates"
            )
    return None


def _rng(what: str) -> str:
    return (
        f"it draws random numbers ({what}), which shifts every later random draw of the run, "
        "so a replay from the recorded checkpoints cannot reproduce it; compute it without "
        "randomness, or log values the recorded code draws"
    )


def _root(node: ast.AST) -> str | None:
    """The name an attribute / subscript / method-call chain starts from (`a` in `a.b[0].c()`)."""
    while True:
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return node.id if isinstance(node, ast.Name) else None


def _store_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _op(op: ast.operator) -> str:
    return ast.unparse(ast.BinOp(ast.Name("a"), op, ast.Name("b")))[2:-2]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
