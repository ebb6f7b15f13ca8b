"""Group commit: append packed batches as frames under the log lock, fsync once, fold them in.

Invariant (with recovery.py's 1 and 6): a frame's LSNs are assigned only while the log lock is
held and after redoing every frame other writers appended, so LSNs are dense and globally
increasing; the store's state learns a frame only after the fsync that made it durable.
"""

from __future__ import annotations

import msgpack

from . import kinds as K
from .format import LOCK, LOG_DIR, segment_name
from .frame import encode_payload
from .index_checkpoint import remove_older, write_index
from .manifest import Manifest, read_manifest, write_manifest
from .recovery import redo
from .segment import HEADER_SIZE, encode_header

# Kinds whose bodies the state keeps: fold in their stored (msgpack round-tripped) form, so the
# state after a commit equals the state recovery would rebuild.
_KEPT = frozenset({K.RUN_BEGIN, K.RUN_END, K.RUN_RESUME, K.CKPT_END, K.CKPT_DROP})


def commit(store, packed: list) -> int:
    """Append [(batch, payload), ...] as frames; returns the last durable LSN. Caller holds store._mutex."""
    fs, root = store.fs, store.root
    lock = fs.lock(f"{root}/{LOCK}")
    try:
        catch_up(store)
        state = store._state
        base = first = state.last_lsn + 1
        written = []
        rolled = False
        for batch, payload in packed:
            frame = encode_payload(base, len(batch), payload, base - first)
            handle, seg_no, r = _room_for(store, len(frame), base)
            rolled |= r
            offset = handle.write(frame)
            written.append((seg_no, offset, offset + len(frame), base, batch))
            base += len(batch)
        if written:
            handle.fsync()
        for seg_no, offset, end, first, batch in written:
            state.note_frame(seg_no, offset, end, first, len(batch))
            if _KEPT.isdisjoint(kind for kind, _ in batch):
                state.apply_entries(first, batch)  # the common case: values and loops only
                continue
            for i, (kind, body) in enumerate(batch):
                if kind in _KEPT:
                    body = msgpack.unpackb(
                        msgpack.packb(body, use_bin_type=True), raw=False, strict_map_key=False
                    )
                state.apply(first + i, kind, body)
        if rolled or _due_for_index(store):
            store._manifest = write_index(fs, root, state, store._manifest)
            remove_older(fs, root, store._manifest)
        return state.last_lsn
    finally:
        lock.release()


def catch_up(store) -> None:
    """Redo frames others appended; cut a torn tail (we hold the log lock, so nobody is writing).

    A last segment cut below its header (offset 0) gets its header back: the MANIFEST says
    what it was (number, store id, first LSN), and it held no frame. Rewriting it is
    idempotent, so a crash meanwhile leaves the same situation for the next writer.
    """
    manifest = read_manifest(store.fs, store.root)
    torn = redo(store.fs, store.root, manifest, store._state)
    store._manifest = manifest
    if torn is not None:
        seg_no, offset = torn
        path = f"{store.root}/{segment_name(seg_no)}"
        if offset == 0:
            first_lsn = dict(manifest.segments)[seg_no]
            store.fs.write_file(path, encode_header(seg_no, manifest.store_id, first_lsn))
        else:
            store.fs.truncate(path, offset)
        store.fs.fsync(path)


def _current(store):
    seg_no = store._manifest.segments[-1][0]
    if store._seg_handle is None or store._seg_handle_no != seg_no:
        if store._seg_handle is not None:
            store._seg_handle.close()
        store._seg_handle = store.fs.open_append(f"{store.root}/{segment_name(seg_no)}")
        store._seg_handle_no = seg_no
    return store._seg_handle, seg_no


def _room_for(store, n: int, first_lsn: int):
    """The segment handle to append n bytes to, rolling to a new segment if this one is full."""
    handle, seg_no = _current(store)
    size = handle.size()
    if size + n <= store.segment_bytes or size <= HEADER_SIZE:
        return handle, seg_no, False
    handle.fsync()  # the old segment's frames must be durable before the manifest moves on
    new_no = seg_no + 1
    path = f"{store.root}/{segment_name(new_no)}"
    m = store._manifest
    store.fs.write_file(path, encode_header(new_no, m.store_id, first_lsn))
    store.fs.fsync(path)
    store.fs.fsync_dir(f"{store.root}/{LOG_DIR}")
    new = Manifest(store_id=m.store_id, segments=m.segments + [[new_no, first_lsn]], index=m.index)
    write_manifest(store.fs, store.root, new)
    store._manifest = new
    handle, seg_no = _current(store)
    return handle, seg_no, True


def _due_for_index(store) -> bool:
    """Whether enough log follows the last index checkpoint to write a new one.

    Counted in records as well as bytes: small records compress well, and redo costs about a
    microsecond per record whatever its size.
    """
    st, idx = store._state, store._manifest.index
    if idx is None:
        nbytes = (st.tail_seg - 1) * store.segment_bytes + st.tail_off
        nrecs = st.last_lsn
    else:
        nbytes = (st.tail_seg - idx["seg_no"]) * store.segment_bytes + st.tail_off - idx["offset"]
        nrecs = st.last_lsn - idx["lsn"]
    return nbytes >= store.index_interval or nrecs >= store.index_records
