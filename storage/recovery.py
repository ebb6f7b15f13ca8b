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
7. (Replay's: a replayed value equals a from-scratch run's; florql/replay.)
8. Damage costs only the damaged range. Opened with `allow_damage=True`, recovery redoes the
   whole log, steps over every damaged range to the next good frame (or segment) and records
   it (`Store.damage()`); readers step over the same ranges and return every other record.
   `repair` (repair.py) cuts the ranges out into quarantine/ and leaves hole frames, so the
   repaired log reads exactly what a tolerant open reads, and nothing else is lost.
9. Repair is idempotent: a crash during repair, then repair again, gives the same store
   (see repair.py for the order of its writes).

State diagram of an open store:

    absent --Store.open(create=True): store._init_store--> empty
    on disk --Store.open: read_manifest, index_checkpoint.load_index, redo--> open (as of the tail)
    open --Store.refresh: redo--> open (later tail)
    open --LogWriter.flush: committer.commit (log lock held): catch_up (redo), append, fsync,
         every so often index_checkpoint.write_index--> open (later tail)
    open --committer.catch_up finds a torn tail: fs.truncate--> open (tail cut)
    on disk, damaged --Store.open(allow_damage=True): recover(tolerate=True)--> open read-only
    on disk, damaged --repair.repair: quarantine, hole frames, rebuild--> on disk, clean
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from .errors import UNREADABLE, CorruptionError, os_phrase, unreadable
from .format import segment_name
from .frame import decode_entries, gc_paused
from .index_checkpoint import load_index
from .manifest import Manifest, read_manifest
from .records import Lost, Record
from .segment import HEADER_SIZE, FrameScanner, decode_header, encode_header, valid_frame_after
from .state import StoreState


def decode_checked(frame, path: str, use_list: bool = True) -> Any:
    """The [[kind, body], ...] of a good frame; CorruptionError if it is not what it claims.

    With `use_list=False` arrays decode as tuples (see `decode_entries`). A hole frame holds
    no records.
    """
    if frame.hole:
        return [] if use_list else ()
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
    what = _WHY.get(reason, reason)
    return CorruptionError(
        f"log segment {path}: the frame at offset {offset} (expected LSN {lsn}) {what}, and it is "
        "not the torn tail of the log; run `florql check --repair` to keep what is intact (or "
        "query with --allow-damage)",
        segment=path,
        offset=offset,
        lsn=lsn,
    )


def redo(
    fs, root: str, manifest: Manifest, state: StoreState, *, tolerate: bool = False
) -> tuple[int, int] | None:
    """Scan the log after `state`'s tail, folding every good frame into `state`.

    Returns (seg_no, offset) of a torn tail if the log ends in one (invariant 3), else None;
    offset 0 is a last segment cut below its header (the next writer rewrites the header).
    Raises CorruptionError for damage anywhere else, unless `tolerate`: then the damage is
    recorded in `state.damage` (with `state.skips` for readers) and the scan goes on at the
    next good frame (invariant 8).
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
                f"the store at {root} lost log segment {state.tail_seg} from its manifest; "
                "run `florql check --repair` to rebuild the manifest from the segments"
            ) from None
        offset = state.tail_off
        _check_tail_present(fs, root, state)
    while i < len(segs):
        seg_no, first_lsn = segs[i]
        path = f"{root}/{segment_name(seg_no)}"
        last = i == len(segs) - 1
        if offset == 0:
            if tolerate and first_lsn > state.last_lsn + 1:
                _note_gap(path, seg_no, state, first_lsn)
            try:
                offset = _open_segment(fs, path, seg_no, first_lsn, manifest, state, last)
            except CorruptionError as exc:
                if not tolerate:
                    raise
                resume = _past_bad_header(fs, path, seg_no, segs, i, state, exc)
                if resume is None:
                    i, offset = i + 1, 0
                    continue
                offset = resume
            if offset == 0:  # a last segment cut below its header: nothing in it yet
                return seg_no, 0
        while True:
            scanner = FrameScanner(fs, path, offset, state.last_lsn + 1)
            try:
                _fold(scanner, seg_no, path, state, tolerate)
            except UNREADABLE as exc:
                if not tolerate:
                    raise unreadable(path, exc, "log segment") from None
                _unreadable_rest(path, seg_no, segs, i, state, offset, exc)
                break
            stop = scanner.stop
            if stop.reason == "end":
                break
            if (
                last
                and stop.reason != "lsn"
                and valid_frame_after(
                    fs, path, stop.offset, stop.lsn, later_flush=True, end=scanner.seen_end
                )
                is None
            ):
                return seg_no, stop.offset
            if not tolerate:
                raise corruption(path, stop.offset, stop.lsn, stop.reason)
            resume = _past_bad_frame(fs, path, seg_no, segs, i, state, scanner)
            if resume is None:
                break
            offset = resume
        i, offset = i + 1, 0
    return None


def _fold(scanner: FrameScanner, seg_no: int, path: str, state: StoreState, tolerate: bool) -> None:
    """Fold every good frame the scanner yields into `state`.

    A frame whose checksum holds but whose records cannot be decoded is corruption; with
    `tolerate` it is stepped over like any damaged frame (its LSNs are lost).
    """
    for frame in scanner:
        try:
            entries = decode_checked(frame, path)
            if frame.hole:
                state.note_frame(seg_no, frame.offset, frame.end, frame.base_lsn, frame.nrecs)
                state.note_hole(path, frame.offset, frame.base_lsn, frame.nrecs)
                continue
            if tolerate:  # strict mode raises anyway, so it skips this second pass
                _validate_entries(frame, path, entries)
        except CorruptionError:
            if not tolerate:
                raise
            last = frame.base_lsn + frame.nrecs - 1
            lost = Lost(
                frame.base_lsn, last, path, frame.offset, "cannot be decoded", "frame_decode"
            )
            state.note_frame(seg_no, frame.offset, frame.end, frame.base_lsn, frame.nrecs)
            state.damage.append(lost)
            state.undecodable.add((seg_no, frame.offset))
            continue
        state.note_frame(seg_no, frame.offset, frame.end, frame.base_lsn, frame.nrecs)
        try:
            state.apply_entries(frame.base_lsn, entries)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise _undecodable(frame, path, exc) from None


def _validate_entries(frame, path: str, entries: list) -> None:
    """CorruptionError unless every entry is a [kind, body] pair that `apply` can fold in.

    Checked before anything is applied, so a malformed frame leaves the state untouched.
    """
    try:
        probe = StoreState()
        for kind, body in entries:
            if type(kind) is not int:
                raise TypeError(f"record kind {kind!r} is not an int")
            if kind not in _COMMON:
                probe.apply(0, kind, body)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise _undecodable(frame, path, exc) from None


# Kinds `apply_entries` folds without looking inside their bodies beyond a type test.
_COMMON = frozenset({3, 4, 5})


_WHY = {
    "short": "is cut short",
    "bad": "fails its checksum",
    "lsn": "has an out-of-sequence LSN",
}


def _next_first(segs: list, i: int) -> int | None:
    """The first LSN of the segment after segs[i], or None if segs[i] is the last."""
    return segs[i + 1][1] if i + 1 < len(segs) else None


def _past_bad_frame(fs, path, seg_no, segs, i, state, scanner) -> int | None:
    """Tolerant redo met damage at `scanner.stop`: note what is lost and where reading
    resumes. Returns the offset of the next good frame in this segment, or None."""
    stop = scanner.stop
    # From the damaged frame itself: a good frame there with a later LSN is a gap before it.
    later = valid_frame_after(fs, path, stop.offset - 1, stop.lsn, end=scanner.seen_end)
    why = _WHY.get(stop.reason, stop.reason)
    kind = "frame_" + {"bad": "checksum", "short": "truncated"}.get(stop.reason, stop.reason)
    if later is not None:
        lost = Lost(stop.lsn, later.base_lsn - 1, path, stop.offset, f"frame {why}", kind)
        state.note_lost(lost, (seg_no, stop.offset), (later.offset, later.base_lsn))
        return later.offset
    nxt = _next_first(segs, i)
    # In the last segment only a stale frame ("lsn") gets here: nothing after it is known.
    last_lsn = stop.lsn - 1 if nxt is None else nxt - 1
    lost = Lost(stop.lsn, last_lsn, path, stop.offset, f"frame {why}; rest of segment", kind)
    state.note_lost(lost, (seg_no, stop.offset), None)
    return None


def _note_gap(path: str, seg_no: int, state: StoreState, first_lsn: int) -> None:
    """LSNs missing between the end of the log so far and a segment's first LSN (a segment
    lost along with the MANIFEST that listed it): lost, and readers cross the gap."""
    lost = Lost(state.last_lsn + 1, first_lsn - 1, path, 0, "missing before it", "lsn_gap")
    state.damage.append(lost)
    state.gaps[seg_no] = lost
    state.last_lsn = first_lsn - 1


def _unreadable_rest(path, seg_no, segs, i, state, offset, exc) -> None:
    """Tolerant redo could not read a segment from `offset` on: the rest of it is lost."""
    nxt = _next_first(segs, i)
    first = state.last_lsn + 1
    lost = Lost(
        first, None if nxt is None else nxt - 1, path, offset, os_phrase(exc), "segment_header"
    )
    state.note_lost(lost, (seg_no, offset), None)
    if offset <= HEADER_SIZE:
        state.dead.add(seg_no)


def _past_bad_header(fs, path, seg_no, segs, i, state, exc) -> int | None:
    """Tolerant redo met a segment whose header is damaged, or which is missing or unreadable.

    Its frames are self-describing, so reading goes on after the header when the file can be
    read; otherwise the whole segment is lost (`state.dead`). Returns the offset to scan from.
    """
    first_lsn = segs[i][1]
    if first_lsn > state.last_lsn + 1:  # the segment before ended in damage
        state.last_lsn = first_lsn - 1
    try:
        fs.read(path, HEADER_SIZE, 1)
        readable = fs.size(path) >= HEADER_SIZE
    except UNREADABLE:
        readable = False
    if readable:
        lost = Lost(first_lsn, first_lsn - 1, path, 0, "damaged header", "segment_header")
        # Readers start after the header anyway; the skip marks the segment for repair.
        state.note_lost(lost, (seg_no, 0), (HEADER_SIZE, first_lsn))
        return HEADER_SIZE
    nxt = _next_first(segs, i)
    reason = str(exc).split(";")[0].removeprefix(f"log segment {path} ")
    lost = Lost(first_lsn, None if nxt is None else nxt - 1, path, 0, reason, "segment_header")
    state.note_lost(lost, (seg_no, 0), None)
    state.dead.add(seg_no)
    return None


def _check_tail_present(fs, root: str, state: StoreState) -> None:
    """CorruptionError if the tail segment ends before the tail the index checkpoint vouches
    for: records acknowledged durable are gone (a truncated segment, not a torn write)."""
    path = f"{root}/{segment_name(state.tail_seg)}"
    size = _size(fs, path)
    if size < state.tail_off:
        raise CorruptionError(
            f"log segment {path} ends at offset {size}, before the end of the log its index "
            f"checkpoint vouches for (offset {state.tail_off}, LSN {state.last_lsn}); "
            "run `florql check --repair` to keep what is intact",
            segment=path,
            offset=size,
            lsn=state.last_lsn,
        )


def _size(fs, path: str) -> int:
    try:
        return fs.size(path)
    except UNREADABLE as exc:
        raise unreadable(path, exc, "log segment") from None


def _open_segment(
    fs, path: str, seg_no: int, first_lsn: int, manifest: Manifest, state: StoreState, last: bool
) -> int:
    """The offset of the segment's first frame, after checking its header.

    Returns 0 for the last segment when it is cut below its header and what is left is the
    start of the header it should have: it holds no frame, and the next writer rewrites it.
    """
    try:
        head = fs.read(path, 0, HEADER_SIZE)
    except UNREADABLE as exc:
        raise unreadable(path, exc, "log segment listed in the manifest") from None
    if (
        last
        and len(head) < HEADER_SIZE
        and first_lsn == state.last_lsn + 1
        and head == encode_header(seg_no, manifest.store_id, first_lsn)[: len(head)]
    ):
        return 0
    got = decode_header(head, path, seg_no, manifest.store_id)
    if got != first_lsn or first_lsn != state.last_lsn + 1:
        raise CorruptionError(
            f"log segment {path} starts at LSN {got}, but the log before it ends at LSN "
            f"{state.last_lsn}; run `florql check --repair` to keep what is intact",
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
    fs, root: str, manifest: Manifest, problems: list | None = None, *, tolerate: bool = False
) -> tuple[Manifest, StoreState, tuple | None]:
    """Open-time recovery: load the last index checkpoint, redo the log after it.

    A writer may replace the index checkpoint (and delete the old file) between our reading
    the MANIFEST and the index; then the MANIFEST is read again rather than redoing the log.
    With `tolerate` the whole log is redone (damage before the index checkpoint must be found
    too) and damage is recorded instead of raised (invariant 8).
    """
    manifest = settled_manifest(fs, root, manifest)
    state = load_index(fs, root, manifest, problems)
    if tolerate:
        state = StoreState()
    torn = redo(fs, root, manifest, state, tolerate=tolerate)
    return manifest, state, torn
