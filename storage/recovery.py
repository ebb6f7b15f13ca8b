"""The recovery manager: from the MANIFEST, the last index checkpoint and a redo of the log after
it, rebuild the store's derived state. Recovery only reads.

Invariants (DESIGN.md §3; tests cite them by number):

1. An LSN is assigned once, grows strictly, and names exactly one record.
   (LSNs are dense: a frame's base LSN must be the previous frame's last LSN + 1; `redo` checks.)
2. A record is either wholly readable with a valid checksum or treated as absent.
3. A torn record at the tail of the last segment is the end of the log, not corruption; a bad
   checksum anywhere else is corruption, reported with segment, offset and LSN.
   (A bad frame in the last segment is torn unless a good frame of a *later flush* follows it:
   each flush fsyncs before the next begins, so a later flush's frame proves this one was
   durable. Frames of the same flush may reach the disk in any order, so a good frame of the
   same flush after a torn one is still part of the torn tail.)
4. A checkpoint is usable only when its end record is durable.
   (Pages are fsynced before CKPT_END is appended; the catalog is built from CKPT_END records.)
5. Recovery is idempotent: a crash during recovery, then recovery again, gives the same store.
   (Recovery writes nothing; only a writer truncates a torn tail, under the log lock.)
6. Nothing acknowledged as durable is lost by a crash at any instant.
   (flush returns after fsync; MANIFEST and index files are replaced by tmp+fsync+rename+fsync.)

State diagram of an open store:

    absent --Store.open(create=True): init_store--> empty
    on disk --Store.open: read_manifest, load_index, redo--> open (state as of the tail)
    open --Store.refresh / LogWriter.flush (under the log lock): redo--> open (later tail)
    open --LogWriter.flush finds a torn tail: truncate_torn_tail--> open (tail cut)
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from .errors import CorruptionError, StoreError
from .format import INDEX_MAGIC, segment_name
from .frame import decode_entries, gc_paused
from .manifest import Manifest, read_manifest, unseal
from .records import Problem, Record
from .segment import HEADER_SIZE, FrameScanner, decode_header, valid_frame_after
from .state import StoreState


def load_index(fs, root: str, manifest: Manifest, problems: list | None = None) -> StoreState:
    """The state saved by the latest index checkpoint, or an empty state if none is usable.

    A damaged index file is not fatal: the log holds everything, so recovery redoes it all.
    """
    idx = manifest.index
    if not idx:
        return StoreState()
    path = f"{root}/{idx['file']}"
    try:
        body = unseal(INDEX_MAGIC, fs.read(path), path, "index checkpoint")
        state = StoreState.from_body(body)
        if state.tail_seg not in {s for s, _ in manifest.segments}:
            raise ValueError("tail segment not in the manifest")
        return state
    except StoreError as exc:
        if not isinstance(exc, CorruptionError):
            raise
        message = str(exc)
    except (FileNotFoundError, KeyError, TypeError, ValueError, IndexError) as exc:
        message = f"index checkpoint {path} is unusable ({exc}); recovery redid the whole log"
    if problems is not None:
        problems.append(Problem("index", path, 0, idx.get("lsn"), message))
    return StoreState()


def decode_checked(frame, path: str, use_list: bool = True) -> Any:
    """The [[kind, body], ...] of a good frame; CorruptionError if it is not what it claims.

    With `use_list=False` arrays decode as tuples (see `decode_entries`).
    """
    try:
        entries = decode_entries(frame, use_list)
        if type(entries) is not (list if use_list else tuple) or len(entries) != frame.nrecs:
            raise ValueError(f"frame says {frame.nrecs} records, holds {len(entries)}")
        # Entries are not checked one by one: the CRC vouches for what our writer packed.
        return entries
    except Exception as exc:  # noqa: BLE001 - any decode failure of a checksummed frame is corruption
        raise _undecodable(frame, path, exc) from None


_new = tuple.__new__


def records_of(frame, path: str) -> list[Record]:
    """The logical records of a good frame, with their LSNs (checked as `decode_checked`)."""
    entries = decode_checked(frame, path)
    base = frame.base_lsn
    try:
        with gc_paused():
            return [_new(Record, (base + i, e[0], e[1])) for i, e in enumerate(entries)]
    except (TypeError, IndexError, KeyError) as exc:
        raise _undecodable(frame, path, exc) from None


def bodies_of(frame, path: str) -> tuple[tuple, tuple]:
    """(kinds, bodies) of a good frame as two parallel tuples; arrays in bodies are tuples.

    The bulk form of `records_of`: no Record per logical record, only C-level passes. Checked
    as `records_of` is, entry by entry (entry[0] is the kind, entry[1] the body), so both
    accept and reject the same frames; a malformed one raises CorruptionError.
    """
    entries = decode_checked(frame, path, use_list=False)
    try:  # two allocations: no need to pause the GC as records_of does
        return tuple(map(_kind_of, entries)), tuple(map(_body_of, entries))
    except (TypeError, IndexError, KeyError) as exc:
        raise _undecodable(frame, path, exc) from None


_kind_of, _body_of = itemgetter(0), itemgetter(1)


def _undecodable(frame, path: str, exc: Exception) -> CorruptionError:
    return CorruptionError(
        f"log segment {path} at offset {frame.offset} (LSN {frame.base_lsn}) has a valid checksum "
        f"but cannot be decoded into records ({exc}); run `florql check`",
        segment=path,
        offset=frame.offset,
        lsn=frame.base_lsn,
    )


def corruption(path: str, offset: int, lsn: int, reason: str) -> CorruptionError:
    """The CorruptionError for damage at `offset` of a segment, where LSN `lsn` was expected."""
    what = {
        "short": "is cut short",
        "bad": "fails its checksum",
        "lsn": "has an out-of-sequence LSN",
    }.get(reason, reason)
    return CorruptionError(
        f"log segment {path}: the frame at offset {offset} (expected LSN {lsn}) {what}, and it is "
        "not the torn tail of the log; run `florql check` to list all damage and restore the store "
        "from a backup",
        segment=path,
        offset=offset,
        lsn=lsn,
    )


def redo(
    fs, root: str, manifest: Manifest, state: StoreState, on_frame=None
) -> tuple[int, int] | None:
    """Scan the log after `state`'s tail, folding every good frame into `state`.

    Returns (seg_no, offset) of a torn tail if the log ends in one (invariant 3), else None.
    Raises CorruptionError for damage anywhere else.
    """
    segs = manifest.segments
    nos = [s for s, _ in segs]
    if state.tail_seg == 0:
        i, offset = 0, 0
    else:
        try:
            i = nos.index(state.tail_seg)
        except ValueError:
            raise CorruptionError(
                f"the store at {root} lost log segment {state.tail_seg} from its manifest; restore it from a backup"
            ) from None
        offset = state.tail_off
    while i < len(segs):
        seg_no, first_lsn = segs[i]
        path = f"{root}/{segment_name(seg_no)}"
        if offset == 0:
            offset = _open_segment(fs, path, seg_no, first_lsn, manifest, state)
        scanner = FrameScanner(fs, path, offset, state.last_lsn + 1)
        for frame in scanner:
            entries = decode_checked(frame, path)
            state.note_frame(seg_no, frame.offset, frame.end, frame.base_lsn, frame.nrecs)
            try:
                state.apply_entries(frame.base_lsn, entries)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
                raise _undecodable(frame, path, exc) from None
        stop = scanner.stop
        if stop.reason != "end":
            last = i == len(segs) - 1
            if (
                last
                and stop.reason != "lsn"
                and valid_frame_after(
                    fs, path, stop.offset, stop.lsn, later_flush=True, end=scanner.seen_end
                )
                is None
            ):
                return seg_no, stop.offset
            raise corruption(path, stop.offset, stop.lsn, stop.reason)
        i, offset = i + 1, 0
    return None


def _open_segment(
    fs, path: str, seg_no: int, first_lsn: int, manifest: Manifest, state: StoreState
) -> int:
    try:
        head = fs.read(path, 0, HEADER_SIZE)
    except FileNotFoundError:
        raise CorruptionError(
            f"log segment {path} listed in the manifest is missing; restore it from a backup",
            segment=path,
            offset=0,
        ) from None
    got = decode_header(head, path, seg_no, manifest.store_id)
    if got != first_lsn or first_lsn != state.last_lsn + 1:
        raise CorruptionError(
            f"log segment {path} starts at LSN {got}, but the log before it ends at LSN "
            f"{state.last_lsn}; restore the store from a backup",
            segment=path,
            offset=0,
            lsn=state.last_lsn + 1,
        )
    return HEADER_SIZE


def settled_manifest(fs, root: str, manifest: Manifest) -> Manifest:
    """`manifest`, or a newer one if a writer replaced (and deleted) its index file meanwhile."""
    for _ in range(3):
        idx = manifest.index
        if not idx or fs.exists(f"{root}/{idx['file']}"):
            break
        manifest = read_manifest(fs, root)
    return manifest


def recover(
    fs, root: str, manifest: Manifest, problems: list | None = None
) -> tuple[Manifest, StoreState, tuple | None]:
    """Open-time recovery: load the last index checkpoint, redo the log after it.

    A writer may replace the index checkpoint (and delete the old file) between our reading
    the MANIFEST and the index; then the MANIFEST is read again rather than redoing the log.
    """
    manifest = settled_manifest(fs, root, manifest)
    state = load_index(fs, root, manifest, problems)
    torn = redo(fs, root, manifest, state)
    return manifest, state, torn
