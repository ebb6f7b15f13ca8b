"""Store.scan_bodies, the bulk reader: exactly what `scan` returns, in another shape."""

from __future__ import annotations

import msgpack
import pytest
from florql_storage import CorruptionError, kinds
from florql_storage.format import segment_name
from florql_storage.frame import encode_payload, parse_frame
from florql_storage.recovery import bodies_of, records_of
from florql_storage.segment import HEADER_SIZE

from .conftest import value


def _as_lists(body):
    if type(body) is tuple:
        return [_as_lists(v) for v in body]
    if type(body) is dict:
        return {k: _as_lists(v) for k, v in body.items()}
    return body


def _flatten(store, from_lsn: int) -> list[tuple]:
    """scan_bodies as (lsn, kind, body-with-lists) triples, checking each frame's shape."""
    out = []
    for base, ks, bodies in store.scan_bodies(from_lsn):
        assert type(ks) is tuple and type(bodies) is tuple and len(ks) == len(bodies) > 0
        out += [
            (base + i, k, _as_lists(b)) for i, (k, b) in enumerate(zip(ks, bodies, strict=True))
        ]
    return out


def _store_with_frames(fscase, segment_bytes: int = 1 << 20, n_frames: int = 6):
    """A store of several frames of mixed kinds (and, with small segments, several segments)."""
    store = fscase.open(segment_bytes=segment_bytes)
    w = store.writer()
    w.begin_run("r1", {"script": "t.py", "nested": {"a": [1, [2, 3]]}})
    for f in range(n_frames):
        entries = [(kinds.LOOP, ["r1", f, "epoch", [["epoch", f, f]], 0.5])]
        entries += [(kinds.VALUE, value(10 * f + i)) for i in range(7)]
        entries.append((kinds.VALUE, ["r1", 99, "vec", [1, [2.5, "x"]], [], 0.0, ""]))
        w.append_many(entries)
        w.flush()
    w.end_run("r1", "finished", {"error": None})
    w.close()
    return store


def test_scan_bodies_returns_exactly_what_scan_returns_from_every_lsn(fscase):
    store = _store_with_frames(fscase)
    expected = [(r.lsn, r.kind, r.body) for r in store.scan()]
    assert len(expected) == store.last_lsn == 1 + 6 * 9 + 1
    for from_lsn in range(1, store.last_lsn + 2):  # frame starts, middles and past the end
        assert _flatten(store, from_lsn) == expected[from_lsn - 1 :]


def test_scan_bodies_yields_one_item_per_frame_starting_mid_frame(fscase):
    store = _store_with_frames(fscase)
    frames = [[r.lsn for r in f] for f in store.scan_frames(5)]
    got = [(base, len(ks)) for base, ks, _ in store.scan_bodies(5)]
    assert got == [(f[0], len(f)) for f in frames]
    assert got[0][0] == 5 and len(got) > 3


def test_scan_bodies_crosses_segment_boundaries_and_sees_a_reopen(fscase):
    store = _store_with_frames(fscase, segment_bytes=4096, n_frames=80)
    expected = [(r.lsn, r.kind, r.body) for r in store.scan()]
    again = fscase.open(segment_bytes=4096)
    assert len(list(fscase.fs.listdir(fscase.path("log")))) > 1
    assert _flatten(again, 1) == expected
    assert _flatten(again, 30) == expected[29:]


def test_scan_bodies_arrays_are_tuples_and_maps_are_dicts(fscase):
    store = _store_with_frames(fscase)
    frames = store.scan_bodies(1)
    base, ks, bodies = next(frames)
    assert (base, ks[0]) == (1, kinds.RUN_BEGIN)
    assert bodies[0]["nested"] == {"a": (1, (2, 3))}
    _, ks, bodies = next(frames)
    values = [b for k, b in zip(ks, bodies, strict=True) if k == kinds.VALUE]
    loops = [b for k, b in zip(ks, bodies, strict=True) if k == kinds.LOOP]
    assert values and loops and all(type(b) is tuple for b in values + loops)
    assert hash(values[0][4]) == hash((("epoch", 0, 0),))  # contexts are hashable as decoded


def test_scan_bodies_of_an_empty_store_or_past_the_end_yields_nothing(fscase):
    store = fscase.open()
    assert list(store.scan_bodies()) == []
    _store_with_frames(fscase)
    assert list(fscase.open().scan_bodies(10_000)) == []


def test_scan_bodies_raises_corruption_on_a_damaged_frame(fscase):
    # Invariant 2: every frame's checksum is verified on this path too.
    store = _store_with_frames(fscase)
    seg = fscase.path(segment_name(1))
    data = bytearray(fscase.fs.read(seg))
    data[HEADER_SIZE + 40] ^= 0x01  # inside the first frame, after the store was opened
    fscase.fs.write_file(seg, bytes(data))
    with pytest.raises(CorruptionError) as err:
        list(store.scan_bodies(1))
    assert (err.value.segment, err.value.offset) == (seg, HEADER_SIZE)


@pytest.mark.parametrize(
    "payload",
    [
        [[3]],
        [5, 6],
        [[3, "a"], None],
        {"a": 1},
        [[3, "a"], [4, "b", "extra"]],
        [[3, ["x", [1, 2]]], [1, {"k": [True, None]}]],
    ],
)
def test_bodies_of_accepts_and_rejects_exactly_what_records_of_does(payload):
    data = encode_payload(7, len(payload), msgpack.packb(payload))
    frame = parse_frame(data, 0, len(data))
    assert frame.status == "ok"
    try:
        expected = [(r.lsn, r.kind, r.body) for r in records_of(frame, "/seg")]
    except CorruptionError:
        with pytest.raises(CorruptionError, match="malformed|decoded"):
            bodies_of(frame, "/seg")
        return
    ks, bodies = bodies_of(frame, "/seg")
    assert [
        (7 + i, k, _as_lists(b)) for i, (k, b) in enumerate(zip(ks, bodies, strict=True))
    ] == expected
