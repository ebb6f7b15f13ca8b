"""Loop-carried state: what a checkpoint holds beyond the registered objects' `state_dict()`s.

`florql/scriptvars.py` names the script variables a restored iteration needs (statically);
this module decides at run time how each value is captured and restored, so that a restored
iteration holds everything the recorded run carried into it (invariant 7):

- plain values, containers, tensors, NumPy arrays: their value (`{"$v": skeleton}`), bound
  again on restore; for an object the loop only changes in place (`{"$in": ...}`) the live
  object is updated in place where it allows it (a list or dict keeps its identity, a tensor
  of the same shape is copied into), so that its aliases see the restored value too;
- objects with `state_dict()`/`load_state_dict()` nobody registered (an optimizer, a scheduler,
  a second model): `{"$state": ...}`, loaded into the live object; skipped while unchanged
  (a module whose tensors were never modified in place, an optimizer with no state);
- random generators the script made (`np.random.default_rng()`, `random.Random()`,
  `torch.Generator()`): their state;
- objects whose attributes are plain values (an argparse namespace, an early-stopping
  helper): `{"$attrs": ...}`, set on the live object.

A variable the loop assigns whose value none of these can store (an open file, an iterator)
makes the checkpoint *incomplete* (`meta["incomplete"]` names it and why): the planner never
restores such a checkpoint, it re-executes from an earlier complete one or from the start. An
object the loop only changes in place (a receiver) whose state cannot be read is listed in
`meta["uncaptured"]` (a progress bar, a TensorBoard writer): it is assumed not to feed values
back, and `florql explain` shows the list.

Gradients (`.grad` of the registered modules' parameters and registered tensors) are part of
the state: a statement after the inner loop reads what the last step left.

>>> import torch
>>> tensors = []
>>> skels, bad, skipped = encode_scope({"lr": 5.0, "hist": [1, 2], "f": open}, tensors, {}, {"f"})
>>> skels, bad, skipped
({'lr': {'$v': 5.0}, 'hist': {'$v': [1, 2]}}, {}, {})
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import types
from dataclasses import dataclass, field
from typing import Any

from florql import capture
from florql.errors import RecordError

EXTRA_BYTES = 16 << 20  # per variable that no recorded code reads after the restore point


@dataclass
class LoopValues:
    """Script variables read at a checkpoint: by checkpoint-meta key (`vars`, `outer_vars`,
    `global_vars`), with the names that are only changed in place (`receivers`) and those only
    new statements could read (`extras`)."""

    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    receivers: frozenset[str] = frozenset()
    extras: frozenset[str] = frozenset()


_WRAPPERS = (
    {"$v"},
    {"$in"},
    {"$state"},
    {"$state", "grads"},
    {"$attrs", "class"},
    {"$rng", "state"},
)
_SKIP_TYPES = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    type,
    types.MethodType,
)


def owned_ids(objects: dict[str, Any]) -> set[int]:
    """ids of the registered objects and of every tensor and submodule they hold."""
    out = {id(o) for o in objects.values()}
    for obj in objects.values():
        for attr in ("parameters", "buffers", "modules"):
            fn = getattr(obj, attr, None)
            if callable(fn):
                with contextlib.suppress(TypeError):  # a look-alike method taking arguments
                    out |= {id(x) for x in fn()}
        for group in getattr(obj, "param_groups", None) or []:
            out |= {id(p) for p in group.get("params", [])}
    return out


def encode_scope(
    values: dict[str, Any],
    tensors: list,
    owned: Any,
    receivers: set[str],
    extras: frozenset[str] | set[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Skeletons of one scope's variables: (skeletons, not storable {name: why}, uncaptured
    receivers {name: type}). `owned`: ids of registered state (skipped: the checkpoint holds
    it already); `receivers`: names only changed in place (never incomplete); `extras`: names
    only new statements could read, left out above EXTRA_BYTES of tensors."""
    skels: dict[str, Any] = {}
    bad: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, value in values.items():
        if id(value) in owned or isinstance(value, _SKIP_TYPES):
            continue
        mark = len(tensors)
        try:
            skel = _encode(value, tensors, name, name in receivers)
        except RecordError as e:
            del tensors[mark:]
            if name in receivers:
                skipped[name] = type(value).__name__
            else:
                bad[name] = str(e)
            continue
        size = sum(t.numel() * t.element_size() for t in tensors[mark:])
        if name in extras and size > EXTRA_BYTES:
            del tensors[mark:]
            bad[name] = f"{size >> 20} MiB of tensors, more than a checkpoint keeps for it"
        elif skel is not None:
            skels[name] = skel
    return skels, bad, skipped


def _unstorable(value: Any) -> str:
    return f"a {type(value).__name__}, which a checkpoint cannot store"


def _encode(value: Any, tensors: list, name: str, receiver: bool) -> dict[str, Any] | None:
    """One variable's skeleton; None when nothing needs storing (unchanged state)."""
    kind = _generator_kind(value)
    if kind is not None:
        return {"$rng": kind, "state": capture.encode(_generator_state(value, kind), tensors, name)}
    if callable(getattr(value, "state_dict", None)) and callable(
        getattr(value, "load_state_dict", None)
    ):
        if not receiver:  # bound anew by the loop (`best = copy.deepcopy(model)`)
            raise RecordError(
                f"{name} is a {type(value).__name__} the loop makes anew; a checkpoint can load "
                "state into an object but not rebuild one"
            )
        if not _changed(value):
            return None
        skel = {"$state": capture.encode(value.state_dict(), tensors, name)}
        # A module's gradients are state too (a statement after the loop may read them).
        skel["grads"] = encode_grads({name: value}, tensors).get(name, {})
        return skel
    if capture.is_tensor(value) and receiver and value._version == 0:
        return None  # never modified in place since it was made (a dataset)
    mark = len(tensors)
    try:
        # A variable the loop assigns is rebound on restore; an object it only changes in
        # place is updated in place, so that its aliases (a list inside a dict) see the change.
        return {"$in" if receiver else "$v": capture.encode(value, tensors, name)}
    except RecordError:
        del tensors[mark:]
        if not _plain_object(value):
            raise RecordError(_unstorable(value)) from None
    try:
        attrs = capture.encode(dict(vars(value)), tensors, name)
    except RecordError:
        raise RecordError(_unstorable(value)) from None
    return {"$attrs": attrs, "class": _class_name(value)}


def _plain_object(value: Any) -> bool:
    """An instance of a script's own class (or a namespace) whose attributes may be stored."""
    if isinstance(value, (argparse.Namespace, types.SimpleNamespace)):
        return True
    mod = type(value).__module__ or ""
    return hasattr(value, "__dict__") and mod.split(".")[0] not in ("builtins", "io", "_io")


def _changed(obj: Any) -> bool:
    """Whether an unregistered state holder has state worth storing: a module whose tensors
    were modified in place, an optimizer with state; anything else always."""
    tensors = getattr(obj, "parameters", None)
    if callable(tensors):
        every = list(obj.parameters()) + list(obj.buffers())
        return any(t._version > 0 for t in every)
    state = getattr(obj, "state", None)
    if isinstance(state, dict) and hasattr(obj, "param_groups"):
        return bool(state)
    return True


def _generator_kind(value: Any) -> str | None:
    mod = type(value).__module__ or ""
    if isinstance(value, random.Random):
        return "python"
    if mod.startswith("numpy") and hasattr(value, "bit_generator"):
        return "numpy"
    if mod.startswith("torch") and type(value).__name__ == "Generator":
        return "torch"
    return None


def _generator_state(value: Any, kind: str) -> Any:
    if kind == "python":
        version, state, gauss = value.getstate()
        return [version, list(state), gauss]
    if kind == "numpy":
        return value.bit_generator.state
    return value.get_state()


# --- restore -----------------------------------------------------------------------------------


def decode_scope(skels: dict[str, Any], blobs: list, live: dict[str, Any]) -> dict[str, Any]:
    """Restore one scope: update live objects in place; returns the names to (re)bind.

    Raises RecordError when state that needs a live object (`$state`, `$attrs`, a generator)
    finds none to load into.
    """
    rebind: dict[str, Any] = {}
    for name, skel in skels.items():
        if not _wrapped(skel):
            rebind[name] = capture.decode(skel, blobs)  # a bare skeleton: an older checkpoint
            continue
        current = live.get(name)
        if "$v" in skel:
            rebind[name] = capture.decode(skel["$v"], blobs)
            continue
        if "$in" in skel:
            value = capture.decode(skel["$in"], blobs)
            if not _assign_in_place(current, value):
                rebind[name] = value
            continue
        if "$attrs" in skel:
            if current is None or _class_name(current) != skel["class"]:
                current = rebind[name] = _blank(skel["class"], name)
            current.__dict__.update(capture.decode(skel["$attrs"], blobs))
            continue
        if current is None:
            raise RecordError(
                f"cannot restore {name}: the replayed code has no object to load its state "
                "into at this point"
            )
        if "$state" in skel:
            current.load_state_dict(capture.decode(skel["$state"], blobs))
            restore_grads({name: current}, {name: skel.get("grads") or {}}, blobs)
        elif "$rng" in skel:
            _set_generator(current, skel["$rng"], capture.decode(skel["state"], blobs))
    return rebind


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _blank(ref: str, name: str) -> Any:
    """An instance of the script's own class `ref` ("module:qualname") made without running
    its `__init__`, to receive the stored attributes (no stored code runs: the class must be
    one the replayed script has defined, or a namespace)."""
    module, _, qualname = ref.partition(":")
    cls: Any = sys.modules.get(module)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if cls in (argparse.Namespace, types.SimpleNamespace):
        return cls()
    if not isinstance(cls, type) or not _own_module(sys.modules.get(module)):
        raise RecordError(
            f"cannot restore {name}: its class {ref} is not one the replayed script defines"
        )
    blank: Any = cls.__new__  # no __init__: only the stored attributes are set
    return blank(cls)


def _own_module(mod: Any) -> bool:
    """A module of the script's own (its `__main__`, or a file outside the interpreter's
    library folders)."""
    if mod is None:
        return False
    if mod.__name__ == "__main__":
        return True
    path = os.path.realpath(getattr(mod, "__file__", None) or "/")
    libs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return "site-packages" not in path and not any(path.startswith(p + os.sep) for p in libs)


def _wrapped(skel: Any) -> bool:
    return isinstance(skel, dict) and set(skel) in _WRAPPERS


def _assign_in_place(current: Any, value: Any) -> bool:
    if type(current) is list and type(value) is list:
        current[:] = value
    elif type(current) is dict and type(value) is dict:
        current.clear()
        current.update(value)
    elif capture.is_tensor(current) and capture.is_tensor(value) and current.shape == value.shape:
        import torch

        with torch.no_grad():
            current.copy_(value.to(current.dtype))
    else:
        return False
    return True


def _set_generator(gen: Any, kind: str, state: Any) -> None:
    if kind == "python":
        version, internal, gauss = state
        gen.setstate((version, tuple(internal), gauss))
    elif kind == "numpy":
        gen.bit_generator.state = state
    else:
        gen.set_state(state)


# --- gradients ---------------------------------------------------------------------------------


def encode_grads(objects: dict[str, Any], tensors: list) -> dict[str, Any]:
    """{object name: {parameter name: skeleton}} of the registered objects' gradients that
    are set (a parameter missing from it had `.grad` None)."""
    out: dict[str, Any] = {}
    for name, obj in objects.items():
        grads = {p: t.grad for p, t in _params(obj) if t.grad is not None}
        if grads:
            out[name] = {
                p: capture.encode(g.detach(), tensors, f"{name}.{p}.grad") for p, g in grads.items()
            }
    return out


def restore_grads(objects: dict[str, Any], saved: dict[str, Any], blobs: list) -> None:
    """Set every registered parameter's `.grad` as the checkpoint had it (None included)."""
    for name, obj in objects.items():
        mine = saved.get(name, {})
        for p, t in _params(obj):
            if p in mine:
                t.grad = capture.decode(mine[p], blobs).to(t.device).clone()
            else:
                t.grad = None


def _params(obj: Any) -> list[tuple[str, Any]]:
    if capture.is_tensor(obj):
        return [("", obj)] if obj.requires_grad else []
    named = getattr(obj, "named_parameters", None)
    return list(named()) if callable(named) else []
