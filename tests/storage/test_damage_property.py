"""Hypothesis: random byte flips and truncations of a store's segment files are each detected
(CorruptionError or a check() problem) or are a clean torn tail; a wrong record is never returned.

Invariant 2 (whole record or absent) and invariant 3 (torn tail vs corruption).
"""

from __future__ import annotations

from florql_storage import CorruptionError, Store, StoreError, kinds
from florql_storage.fs import MemFS
from florql_storage.repair import repair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import SCALE, value


def _build() -> tuple[MemFS, list]:
    fs = MemFS()
    s = Store.open("/s", fs=fs, segment_bytes=8192, index_records=10**9)
    w = s.writer()
    for i in range(300):
        w.append(kinds.VALUE, value(i))
        if i % 13 == 12:
            w.flush()
    w.flush()
    return fs, [tuple(r) for r in s.scan()]


FS, RECORDS = _build()
SEGMENTS = sorted(f"/s/log/{n}" for n in FS.listdir("/s/log"))


def _copy() -> MemFS:
    return FS.crash("keep")


def _outcome(fs: MemFS):
    """(records read, error) after reopening a damaged store."""
    try:
        store = Store.open("/s", fs=fs)
        got = [tuple(r) for r in store.scan()]
    except CorruptionError as exc:
        return None, exc
    return got, store


damage = st.tuples(
    st.sampled_from(SEGMENTS),
    st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3
    ),
)


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage)
def test_byte_flips_are_detected_never_returned(d):
    seg, flips = d
    fs = _copy()
    data = bytearray(fs.read(seg))
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    fs.write_file(seg, bytes(data))
    got, result = _outcome(fs)
    if got is None:
        assert isinstance(result, CorruptionError) and result.segment is not None
        return
    # Whatever was returned is a prefix of the true log: never a wrong or invented record.
    assert got == RECORDS[: len(got)]
    if len(got) < len(RECORDS):
        # Records went missing without an error: only a torn tail of the last segment may do that.
        last = seg == SEGMENTS[-1]
        assert last or result.check() != []


@settings(max_examples=40 * SCALE, deadline=None)
@given(st.sampled_from(SEGMENTS), st.floats(0, 1, exclude_max=True))
def test_truncations_are_a_torn_tail_or_detected(seg, where):
    fs = _copy()
    size = fs.size(seg)
    fs.truncate(seg, int(where * size))
    got, result = _outcome(fs)
    if got is None:
        assert isinstance(result, CorruptionError)
        return
    assert got == RECORDS[: len(got)]
    if seg != SEGMENTS[-1]:
        assert result.check() != [] or got == RECORDS


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage)
def test_tolerant_open_and_repair_keep_exactly_the_intact_records(d):
    """Invariant 8: whatever the damage, a tolerant open returns true records only, in order,
    missing exactly the LSNs it reports lost (or a silently dropped tail, invariant 3); the
    repaired store reads the same, and check is then clean."""
    seg, flips = d
    fs = _copy()
    data = bytearray(fs.read(seg))
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    fs.write_file(seg, bytes(data))
    store = Store.open("/s", fs=fs, allow_damage=True)
    got = [tuple(r) for r in store.scan()]
    truth = {r[0]: r for r in RECORDS}
    assert all(truth[r[0]] == r for r in got) and got == sorted(got)
    reported = set()
    for lost in store.damage():
        end = RECORDS[-1][0] if lost.last_lsn is None else lost.last_lsn
        reported |= set(range(lost.first_lsn, end + 1))
    missing = set(truth) - {r[0] for r in got}
    tail = {lsn for lsn in missing if lsn > max(reported | {r[0] for r in got}, default=0)}
    assert missing - tail <= reported
    assert not tail or seg == SEGMENTS[-1]
    repair("/s", fs)
    again = Store.open("/s", fs=fs)
    assert [tuple(r) for r in again.scan()] == got
    assert again.check() == []


def _all_files(fs: MemFS, root: str) -> list[str]:
    out = []
    for d in ("", "log", "pages", "index"):
        folder = f"{root}/{d}".rstrip("/")
        out += [f"{folder}/{n}" for n in fs.listdir(folder) if not fs.isdir(f"{folder}/{n}")]
    return sorted(p for p in out if not p.endswith("LOCK"))


def _matrix_store():
    from .test_damage_matrix import FS as BUILT
    from .test_damage_matrix import META

    return BUILT, META


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_damage_to_any_file_keeps_the_intact_part_and_repairs_clean(data):
    """Random flips or a cut in any file of a store with checkpoints and an index checkpoint:
    a tolerant open returns true records only, repair leaves a clean store that reads the
    same (plus its CKPT_DROP records), and a second repair finds nothing."""
    built, meta = _matrix_store()
    fs = built.crash("keep")
    path = data.draw(st.sampled_from(_all_files(fs, "/s")))
    raw = bytearray(fs.read(path))
    if data.draw(st.booleans()) and raw:
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    fs.write_file(path, bytes(raw))
    truth = {r[0]: r for r in meta["records"]}
    try:
        tolerant = Store.open("/s", fs=fs, allow_damage=True)
    except StoreError as exc:
        # The MANIFEST's version field lies outside its checksum: with the body damaged too
        # it reads as a newer format, which is refused, never repaired over (FORMAT.md).
        assert path.endswith("MANIFEST") and "newer" in str(exc)
        return
    got = [tuple(r) for r in tolerant.scan()]
    assert all(truth[r[0]] == r for r in got) and got == sorted(got)
    repair("/s", fs)
    again = Store.open("/s", fs=fs)
    assert [r for r in map(tuple, again.scan()) if r[1] != kinds.CKPT_DROP] == got
    assert again.check() == []
    assert not repair("/s", fs).found_damage
