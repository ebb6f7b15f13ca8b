"""Capture and restore of training state: registered objects, script variables and RNG states.

A checkpoint is `(meta, blobs)`: `meta` is msgpack-able data (no pickle, nothing executable),
`blobs` is a list of byte buffers, one per tensor. `encode` turns a state_dict into a *skeleton*
in which every tensor is replaced by `{"$t": blob index, "dtype": ..., "shape": [...]}`; `decode`
builds the state_dict back. Dicts whose keys are not all strings (an optimizer's `state` is keyed
by int parameter ids) become `{"$map": [[key, value], ...]}`, tuples `{"$tuple": [...]}`, so both
survive the round trip exactly.

Capture has two phases (DESIGN.md §2): `Snapshot.take` runs in the training thread and only copies
tensors into buffers kept from the previous checkpoint (no allocation in the steady state); the
buffers are then serialised and written by a background thread, which hands them back afterwards.

>>> import torch
>>> tensors = []
>>> skel = encode({"w": torch.ones(2), 3: (1, "a")}, tensors)
>>> skel
{'$map': [['w', {'$t': 0, 'dtype': 'float32', 'shape': [2]}], [3, {'$tuple': [1, 'a']}]]}
>>> decode(skel, [t.numpy().tobytes() for t in tensors])
{'w': tensor([1., 1.]), 3: (1, 'a')}

Importing this module does not import torch; the functions import it when called.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections import OrderedDict
from typing import Any

from florql.errors import RecordError

_PLAIN = (int, float, str, bool, bytes, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SCALARS = {float, str, bool, int, type(None)}


def encode(obj: Any, tensors: list, path: str = "state") -> Any:
    """Return the tensor-free skeleton of `obj`, appending each tensor found to `tensors`.

    Raises RecordError naming the path of a value that cannot be stored without pickle.
    """
    import numpy as np
    import torch

    if type(obj) is int and not _INT_MIN <= obj <= _INT_MAX:
        return {"$int": str(obj)}  # msgpack holds 64 bits (a NumPy PCG64 state has 128)
    if type(obj) in _PLAIN:
        return obj
    if isinstance(obj, torch.Tensor):
        if obj.is_sparse or obj.is_quantized:
            raise RecordError(
                f"cannot checkpoint {path}: sparse/quantized tensors are not supported"
            )
        tensors.append(obj)
        return {"$t": len(tensors) - 1, "dtype": _dtype_name(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf?":
        tensors.append(torch.from_numpy(np.ascontiguousarray(obj)))
        return {"$nd": len(tensors) - 1, "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf?":
        return obj.item()
    if isinstance(obj, dict):
        return _encode_dict(obj, tensors, path)
    if isinstance(obj, list):
        if _all_scalars(obj):  # a carried history of floats: no per-item call (1M: 1 s -> 0.03 s)
            return list(obj)
        return [encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):  # torch.Size included
        return {"$tuple": [encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, torch.dtype):
        return {"$dtype": _dtype_name(obj)}
    raise RecordError(
        f"cannot checkpoint {path}: a value of type {type(obj).__name__} is not a tensor, "
        "number, string or container of those; keep such objects out of state_dict()"
    )


def _all_scalars(items: list) -> bool:
    """Whether every item is a float, str, bool, None or an int msgpack holds (C-speed: a
    set of types, then the ints' range only when there are ints)."""
    kinds = set(map(type, items))
    if not kinds <= _SCALARS:
        return False
    if int in kinds:
        ints = [v for v in items if type(v) is int]
        return min(ints) >= _INT_MIN and max(ints) <= _INT_MAX
    return True


def _encode_dict(obj: dict, tensors: list, path: str) -> Any:
    items = [(k, encode(v, tensors, f"{path}.{k}")) for k, v in obj.items()]
    if all(type(k) is str and not k.startswith("$") for k, _ in items):
        out: Any = dict(items)
    else:
        out = {"$map": [[encode(k, tensors, path), v] for k, v in items]}
    metadata = getattr(obj, "_metadata", None)  # module versions, read by load_state_dict
    if isinstance(metadata, dict):
        out = {"$sd": out, "$meta": encode(dict(metadata), tensors, path + "._metadata")}
    return out


def decode(skel: Any, blobs: list) -> Any:
    """Inverse of `encode`: rebuild the object, tensors from `blobs` (any byte buffers)."""
    if type(skel) in _PLAIN:
        return skel
    if isinstance(skel, list):
        return [decode(v, blobs) for v in skel]
    if "$t" in skel:
        return blob_to_tensor(blobs[skel["$t"]], skel["dtype"], skel["shape"])
    if "$nd" in skel:
        import numpy as np

        return np.frombuffer(blobs[skel["$nd"]], dtype=skel["dtype"]).reshape(skel["shape"]).copy()
    if "$tuple" in skel:
        return tuple(decode(v, blobs) for v in skel["$tuple"])
    if "$int" in skel:
        return int(skel["$int"])
    if "$map" in skel:
        return {_hashable(decode(k, blobs)): decode(v, blobs) for k, v in skel["$map"]}
    if "$dtype" in skel:
        import torch

        return getattr(torch, skel["$dtype"])
    if "$sd" in skel:
        d = OrderedDict(decode(skel["$sd"], blobs))
        d._metadata = decode(skel["$meta"], blobs)  # type: ignore[attr-defined]
        return d
    return {k: decode(v, blobs) for k, v in skel.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def blob_to_tensor(blob: Any, dtype: str, shape: list[int]) -> Any:
    """A CPU tensor of `blob`'s bytes: zero-copy over a writable buffer (what the store hands
    out), else a copy (read-only buffers: torch warns on wrapping them)."""
    import numpy as np
    import torch

    tdtype = getattr(torch, dtype)
    view = memoryview(blob)
    if not view.readonly and view.nbytes and view.c_contiguous:
        raw = torch.frombuffer(view, dtype=torch.uint8)
        if raw.data_ptr() % torch.empty((), dtype=tdtype).element_size() == 0:
            return raw.view(tdtype).reshape(shape)
    t = torch.empty(shape, dtype=tdtype)
    if t.numel():
        out = t.reshape(-1).view(torch.uint8).numpy()
        out[:] = np.frombuffer(view, dtype=np.uint8)
    return t


def tensor_bytes(t: Any) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (any dtype, 0-d included)."""
    import torch

    flat = t.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


class Snapshot:
    """Reusable CPU buffers into which tensors are copied in the training thread.

    `take(tensors)` copies each tensor into the buffer kept for its position when shape and
    dtype match (the steady state: no allocation), else allocates one. It returns the list of
    byte views to write. One Snapshot must not be taken again before its blobs are written;
    the checkpointer keeps a small pool of them.
    """

    def __init__(self) -> None:
        self._buffers: list[Any] = []
        self.nbytes = 0

    def take(self, tensors: list) -> list[memoryview]:
        import torch

        bufs = self._buffers
        del bufs[len(tensors) :]
        blobs = []
        total = 0
        with torch.no_grad():
            for i, t in enumerate(tensors):
                buf = bufs[i] if i < len(bufs) else None
                if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
                    pin = t.is_cuda
                    buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
                    if i < len(bufs):
                        bufs[i] = buf
                    else:
                        bufs.append(buf)
                buf.copy_(t.detach(), non_blocking=t.is_cuda)
                total += buf.numel() * buf.element_size()
                blobs.append(tensor_bytes(buf))
            if any(t.is_cuda for t in tensors):
                torch.cuda.synchronize()
        self.nbytes = total
        return blobs


def state_skeletons(objects: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """Skeletons of every registered object's state, and the tensors they reference.

    A registered object is either a tensor (stored as is) or has `state_dict()`.
    """
    tensors: list = []
    skels = {}
    for name, obj in objects.items():
        state = obj if is_tensor(obj) else obj.state_dict()
        skels[name] = encode(state, tensors, name)
    return skels, tensors


def restore_objects(objects: dict[str, Any], skels: dict[str, Any], blobs: list) -> list[str]:
    """Load the checkpointed state into the live objects; returns names missing from it."""
    import torch

    missing = []
    for name, obj in objects.items():
        if name not in skels:
            missing.append(name)
            continue
        state = decode(skels[name], blobs)
        if is_tensor(obj):
            with torch.no_grad():
                obj.copy_(state)
        else:
            obj.load_state_dict(state)
            if isinstance(obj, torch.optim.Optimizer):
                # Checkpoints are taken after the step loop, so this optimizer had stepped;
                # without the mark an LR scheduler stepped next warns that it ran first.
                obj._opt_called = True  # type: ignore[attr-defined]
    return missing


def is_tensor(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    if not mod.startswith("torch"):
        return False
    import torch

    return isinstance(obj, torch.Tensor)


def check_registrable(name: str, obj: Any) -> None:
    """Raise RecordError unless `obj` can be checkpointed (tensor or state_dict owner)."""
    if is_tensor(obj):
        return
    if callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    ):
        return
    raise RecordError(
        f"florql.checkpointing({name}=...): a {type(obj).__name__} has no state_dict()/"
        "load_state_dict(); register modules, optimizers, schedulers or tensors"
    )


# --- RNG states ---------------------------------------------------------------------------


def capture_rng(numpy: bool = False) -> dict[str, Any]:
    """The states of Python's, NumPy's (legacy global) and torch's CPU and CUDA generators.

    Only libraries the script has imported are captured (their generators are the only ones it
    can have drawn from); this keeps torch out of scripts that do not use it. `numpy`: import
    NumPy first when it is installed (before a script runs: NumPy seeds its global generator
    from the OS at import, so only a state taken here makes unseeded draws repeatable).

    >>> import random
    >>> s = capture_rng(); a = random.random(); restore_rng(s); a == random.random()
    True
    """
    version, state, gauss = random.getstate()
    out: dict[str, Any] = {"python": [version, list(state), gauss], "numpy": None, "torch": None}
    out["cuda"] = None
    if numpy and "numpy" not in sys.modules:
        with contextlib.suppress(ImportError):
            import numpy as _np  # noqa: F401
    if "numpy" in sys.modules:
        import numpy as np

        np_state: Any = np.random.get_state()
        kind, keys, pos, has_gauss, cached = np_state
        out["numpy"] = [kind, keys.tobytes(), int(pos), int(has_gauss), float(cached)]
    if "torch" in sys.modules:
        import torch

        out["torch"] = bytes(torch.get_rng_state().numpy())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = [bytes(s.numpy()) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(states: dict[str, Any]) -> None:
    """Set every generator captured by `capture_rng` back to the captured state."""
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    if states.get("numpy") is not None:
        import numpy as np

        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state(
            (kind, np.frombuffer(keys, dtype=np.uint32).copy(), pos, has_gauss, cached)
        )
    if states.get("torch") is not None:
        import torch

        torch.set_rng_state(_byte_tensor(states["torch"]))
        if states.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([_byte_tensor(s) for s in states["cuda"]])


def _byte_tensor(b: bytes) -> Any:
    import torch

    t = torch.empty(len(b), dtype=torch.uint8)
    t.numpy()[:] = memoryview(b)
    return t
