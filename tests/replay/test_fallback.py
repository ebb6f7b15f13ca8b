"""Issue 11, item 9: a replay that meets a damaged checkpoint page falls back to the previous
complete checkpoint by itself, says so, and still reproduces a from-scratch run exactly."""

from __future__ import annotations

from florql_storage import Store

from florql.replay import hindsight
from florql.replay.predicate import parse_where
from tests.replay.conftest import v2, values

EPOCH_NAMES = {"wnorm", "running2"}


def _damage_checkpoint_page(store_path, run_id: str, epoch: int) -> str:
    """Flip a byte in a page only the checkpoint of `epoch` references; its id."""
    s = Store.open(str(store_path), create=False)
    try:
        cks = s.checkpoints(run_id)
        target = next(c for c in cks if c.meta["ctx"][0][1] == epoch)
        shared = {
            (r[1], r[2])
            for c in cks
            if c.ckpt_id != target.ckpt_id
            for _n, refs in s._state.ckpt_blobs[c.ckpt_id]
            for r in refs
        }
        ref = next(
            r
            for _n, refs in s._state.ckpt_blobs[target.ckpt_id]
            for r in refs
            if (r[1], r[2]) not in shared and r[3] > 8
        )
    finally:
        s.close()
    page = store_path / ref[1]
    data = bytearray(page.read_bytes())
    data[ref[2] + 4] ^= 0xFF
    page.write_bytes(bytes(data))
    return target.ckpt_id


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_and_says_so(
    fresh, script, oracle
) -> None:
    ckpt_id = _damage_checkpoint_page(fresh.store, fresh.run_id, epoch=4)
    report = hindsight.ensure(
        str(fresh.store),
        sorted(EPOCH_NAMES),
        parse_where("epoch = 4"),
        workers=1,
        progress=False,
        script=script(v2(step=False)),
    )
    # Without its own checkpoint, epoch 4 is re-executed from the end of epoch 3.
    assert report.executed == {fresh.run_id: [4]}
    (note,) = [w for w in report.warnings if "damaged" in w]
    assert ckpt_id in note and "iteration 4" in note and "iteration 3" in note
    got = values(fresh.store, fresh.run_id, EPOCH_NAMES, replayed=True)
    want = {k: v for k, v in oracle.items() if k[0] in EPOCH_NAMES and k[1][0][1] == 4}
    assert got == want and len(want) == 2
