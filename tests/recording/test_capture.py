"""State capture: skeleton + blobs round trips, snapshots, RNG states."""

from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest
import torch
from torch import nn

from florql import capture
from florql.errors import RecordError


def _through_msgpack(skel, blobs):
    """What the store gives back: msgpack-decoded meta and read-only byte buffers."""
    skel = msgpack.unpackb(msgpack.packb(skel), strict_map_key=False)
    return skel, [memoryview(bytes(b)) for b in blobs]


def _trained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_state_of_model_optimizer_scheduler_round_trips_exactly():
    model, opt, sched = _trained()
    objects = {"model": model, "optimizer": opt, "scheduler": sched}
    skels, tensors = capture.state_skeletons(objects)
    blobs = capture.Snapshot().take(tensors)
    skels, blobs = _through_msgpack(skels, blobs)

    model2, opt2, sched2 = _fresh()
    assert (
        capture.restore_objects(
            {"model": model2, "optimizer": opt2, "scheduler": sched2}, skels, blobs
        )
        == []
    )
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]  # betas stay a tuple, lr, params ids
    assert set(s1["state"]) == set(s2["state"]) == {0, 1, 2, 3, 4, 5}  # int keys survive
    for pid, st in s1["state"].items():
        for key, value in st.items():
            assert torch.equal(value, s2["state"][pid][key]), (pid, key)
    assert sched.state_dict() == sched2.state_dict()


def _fresh():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=9)


def test_restored_training_continues_identically():
    model, opt, sched = _trained()
    skels, tensors = capture.state_skeletons({"m": model, "o": opt})
    skels, blobs = _through_msgpack(skels, capture.Snapshot().take(tensors))
    x = torch.randn(16, 4)

    def step(m, o):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
        return [p.detach().clone() for p in m.parameters()]

    expected = step(model, opt)
    model2, opt2, _ = _fresh()
    capture.restore_objects({"m": model2, "o": opt2}, skels, blobs)
    assert all(torch.equal(a, b) for a, b in zip(expected, step(model2, opt2), strict=True))


def test_snapshot_is_a_copy_and_reuses_its_buffers():
    t = torch.arange(6, dtype=torch.float32)
    snap = capture.Snapshot()
    blobs = snap.take([t])
    t.add_(100)  # training goes on after the snapshot
    assert np.frombuffer(blobs[0], dtype=np.float32).tolist() == [0, 1, 2, 3, 4, 5]
    first = snap._buffers[0].data_ptr()
    snap.take([t])
    assert snap._buffers[0].data_ptr() == first  # steady state: no allocation
    assert snap.nbytes == 24


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.float16]
)
def test_tensors_of_every_dtype_and_rank_round_trip(dtype):
    for shape in [(), (0,), (3,), (2, 3, 1)]:
        t = (torch.rand(shape) * 10).to(dtype)
        tensors: list = []
        skel = capture.encode({"t": t}, tensors)
        skel, blobs = _through_msgpack(skel, capture.Snapshot().take(tensors))
        back = capture.decode(skel, blobs)["t"]
        assert back.dtype == dtype and back.shape == t.shape and torch.equal(back, t)


def test_numpy_arrays_and_plain_containers_round_trip():
    value = {"a": np.arange(4, dtype=np.int32), "b": [1, (2.5, "x")], 7: None, "$odd": b"raw"}
    tensors: list = []
    skel, blobs = _through_msgpack(capture.encode(value, tensors), capture.Snapshot().take(tensors))
    back = capture.decode(skel, blobs)
    assert back["a"].dtype == np.int32 and back["a"].tolist() == [0, 1, 2, 3]
    assert back["b"] == [1, (2.5, "x")] and back[7] is None and back["$odd"] == b"raw"


def test_values_pickle_would_need_are_refused_with_their_path():
    with pytest.raises(RecordError, match=r"state\.fn"):
        capture.encode({"fn": lambda x: x}, [])


def test_objects_without_state_dict_cannot_be_registered():
    with pytest.raises(RecordError, match="no state_dict"):
        capture.check_registrable("data", [1, 2])
    capture.check_registrable("w", torch.zeros(2))
    capture.check_registrable("m", nn.Linear(1, 1))


def test_plain_tensor_is_restored_in_place():
    w = torch.ones(3)
    skels, tensors = capture.state_skeletons({"w": w})
    skels, blobs = _through_msgpack(skels, capture.Snapshot().take(tensors))
    w2 = torch.zeros(3)
    capture.restore_objects({"w": w2}, skels, blobs)
    assert w2.tolist() == [1, 1, 1]


def test_rng_states_replay_python_numpy_and_torch_draws():
    states = capture.capture_rng()
    states = msgpack.unpackb(msgpack.packb(states))
    first = (random.random(), np.random.rand(), torch.rand(3).tolist(), torch.randperm(10).tolist())
    capture.restore_rng(states)
    again = (random.random(), np.random.rand(), torch.rand(3).tolist(), torch.randperm(10).tolist())
    assert first == again


def test_blobs_from_writable_buffers_are_wrapped_without_a_copy():
    buf = bytearray(np.arange(6, dtype=np.float32).tobytes())
    t = capture.blob_to_tensor(memoryview(buf), "float32", [2, 3])
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]
    buf[0:4] = np.float32(9).tobytes()
    assert t[0, 0].item() == 9.0  # shares the buffer
    ro = capture.blob_to_tensor(memoryview(bytes(buf)), "float32", [2, 3])
    assert ro[0, 0].item() == 9.0


def test_a_list_of_scalars_encodes_as_itself_and_a_huge_int_still_round_trips():
    from florql import capture

    floats = [float(i) / 3 for i in range(1000)] + [True, None, "x", 2**63]
    assert capture.encode(floats, []) == floats
    mixed = [1, 2**70, "a"]
    skel = capture.encode(mixed, [])
    assert skel[1] == {"$int": str(2**70)} and capture.decode(skel, []) == mixed
