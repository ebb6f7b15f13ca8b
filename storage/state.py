"""What recovery derives from the log: tail, sparse LSN index, runs, checkpoints, page catalog.

`apply` folds one logical record in; `note_frame` one frame's position. An index checkpoint is
this state serialized (`to_body` / `from_body`), so opening a store redoes only the log after it.

>>> s = StoreState()
>>> s.note_frame(1, 48, 100, 1, 2)
>>> s.apply(1, 1, {"run_id": "r1", "script": "t.py"})
>>> s.apply(2, 3, ["r1", 1, "loss", 0.5, [], 0.0, ""])
>>> s.runs["r1"], s.last_lsn, s.locate(2)
([1, {'run_id': 'r1', 'script': 't.py'}, None, 2], 2, (1, 48))
"""

from __future__ import annotations

import bisect

from . import kinds
from .format import SPARSE_INDEX_STEP
from .pages import add_to_catalog
from .records import CheckpointInfo, Lost

# Kinds whose body is a list starting with run_id; every other kind says run_id in a dict.
_LIST_BODY_KINDS = frozenset({kinds.VALUE, kinds.LOOP, kinds.LOOP_END})


def run_of(kind: int, body) -> str | None:
    """The run a record belongs to, or None.

    >>> run_of(3, ["r1", 1, "x", 1, [], 0.0, ""]), run_of(1, {"run_id": "r2"}), run_of(99, [1])
    ('r1', 'r2', None)
    """
    if isinstance(body, dict):
        rid = body.get("run_id")
    elif kind in _LIST_BODY_KINDS and isinstance(body, list) and body:
        rid = body[0]
    else:
        return None
    return rid if isinstance(rid, str) else None


class StoreState:
    """The derived state of a store as of a frame boundary (`tail_seg`, `tail_off`, `last_lsn`)."""

    def __init__(self) -> None:
        self.tail_seg = 0
        self.tail_off = 0
        self.last_lsn = 0
        self.index_lsns: list[int] = []
        self.index_pos: list[tuple[int, int]] = []
        self.runs: dict[str, list] = {}  # run_id -> [begin_lsn, meta, end body or None, last_lsn]
        self.ckpts: list[CheckpointInfo] = []
        self.ckpt_blobs: dict[str, list] = {}  # ckpt_id -> [[raw_len, [page_ref, ...]], ...]
        self.pages: dict[int, list] = {}  # page key -> [page_ref, ...] (pages.add_to_catalog)
        # Damage: `holes` are repaired (hole frames in the log, kept in index checkpoints);
        # `damage` is unrepaired, found only by a tolerant redo (`Store.open(allow_damage=True)`),
        # which also leaves readers a way around it: `skips` maps (seg_no, offset of the damaged
        # bytes) to (offset, LSN) of the next good frame, or None for "the rest of the segment";
        # `dead` holds segments that cannot be read at all.
        self.holes: list[Lost] = []
        self.damage: list[Lost] = []
        self.skips: dict[tuple[int, int], tuple[int, int] | None] = {}
        self.dead: set[int] = set()
        self.gaps: dict[int, Lost] = {}  # segment -> LSNs missing right before it
        # Frames whose checksum holds but whose records cannot be decoded: (seg_no, offset).
        self.undecodable: set[tuple[int, int]] = set()
        # Checkpoints a repair found damaged (CKPT_DROP records): ckpt_id -> reason.
        self.dropped: dict[str, str] = {}

    def note_frame(self, seg_no: int, offset: int, end: int, base_lsn: int, count: int) -> None:
        """Record that a good frame [offset, end) of `seg_no` holds LSNs base_lsn.."""
        if (
            not self.index_pos
            or self.index_pos[-1][0] != seg_no
            or offset - self.index_pos[-1][1] >= SPARSE_INDEX_STEP
        ):
            self.index_lsns.append(base_lsn)
            self.index_pos.append((seg_no, offset))
        self.tail_seg, self.tail_off = seg_no, end
        self.last_lsn = base_lsn + count - 1

    def locate(self, lsn: int) -> tuple[int, int] | None:
        """(seg_no, offset) of a frame at or before the one holding `lsn`; None if before all."""
        entry = self.locate_entry(lsn)
        return None if entry is None else entry[1:]

    def locate_entry(self, lsn: int) -> tuple[int, int, int] | None:
        """(base_lsn, seg_no, offset) of the sparse-index entry at or before `lsn`."""
        i = bisect.bisect_right(self.index_lsns, lsn) - 1
        if i < 0:
            return None
        return (self.index_lsns[i], *self.index_pos[i])

    def apply(self, lsn: int, kind: int, body) -> None:
        """Fold one logical record into the state."""
        rid = run_of(kind, body)
        if rid is None:
            return
        if kind == kinds.CKPT_END:
            # Listed even for a run without RUN_BEGIN: a checkpoint stands on its own.
            self._add_checkpoint(lsn, body)
        elif kind == kinds.CKPT_DROP:
            self._drop_checkpoint(body)
            return
        run = self.runs.get(rid)
        if kind == kinds.RUN_BEGIN:
            if run is None:
                self.runs[rid] = [lsn, body, None, lsn]
            return
        if run is None:
            return
        run[3] = lsn
        if kind == kinds.RUN_END:
            run[2] = body
        elif kind == kinds.RUN_RESUME:
            run[2] = None

    def apply_entries(self, base_lsn: int, entries: list) -> None:
        """Fold a frame's [[kind, body], ...] in; the common kinds only move their run's last LSN."""
        runs = self.runs
        lsn = base_lsn - 1
        for kind, body in entries:
            lsn += 1
            if kind in _LIST_BODY_KINDS:
                if type(body) is list and body and type(body[0]) is str:
                    run = runs.get(body[0])
                    if run is not None:
                        run[3] = lsn
                continue
            self.apply(lsn, kind, body)

    def _add_checkpoint(self, lsn: int, body: dict) -> None:
        info = CheckpointInfo(
            body["ckpt_id"],
            body["run_id"],
            lsn,
            body["meta"],
            body["raw_bytes"],
            body["stored_bytes"],
            body["write_seconds"],
        )
        self.ckpts.append(info)
        self.ckpt_blobs[info.ckpt_id] = body["blobs"]
        for _raw_len, refs in body["blobs"]:
            for ref in refs:
                add_to_catalog(self.pages, ref)

    def _drop_checkpoint(self, body: dict) -> None:
        """Forget a checkpoint a repair found damaged: it is no longer listed (nor its pages)."""
        ckpt_id = body["ckpt_id"]
        self.dropped[ckpt_id] = str(body.get("reason", ""))
        if ckpt_id not in self.ckpt_blobs:
            return
        self.ckpts = [c for c in self.ckpts if c.ckpt_id != ckpt_id]
        del self.ckpt_blobs[ckpt_id]
        self.pages = {}
        for blobs in self.ckpt_blobs.values():
            for _raw_len, refs in blobs:
                for ref in refs:
                    add_to_catalog(self.pages, ref)

    def note_hole(self, seg_path: str, offset: int, base_lsn: int, count: int) -> None:
        """Record a hole frame (LSNs a repair found lost); `note_frame` still places it."""
        last = base_lsn + count - 1
        self.holes.append(Lost(base_lsn, last, seg_path, offset, "lost to damage, repaired"))

    def note_lost(self, lost: Lost, skip_from: tuple[int, int], skip_to) -> None:
        """Record unrepaired damage (tolerant redo) and how readers get past it."""
        self.damage.append(lost)
        self.skips[skip_from] = skip_to
        if lost.last_lsn is not None and lost.last_lsn > self.last_lsn:
            self.last_lsn = lost.last_lsn

    def runs_around(self, first: int, last: int | None) -> list[str]:
        """Runs whose records span LSNs first..last: they may have lost records there."""
        end = float("inf") if last is None else last
        # A run whose end record is not (or no longer) readable may have run on into the range.
        return sorted(
            rid
            for rid, (begin, _m, run_end, run_last) in self.runs.items()
            if begin <= end and (run_last >= first or run_end is None)
        )

    def to_body(self) -> dict:
        """The state as a msgpack-able dict (an index checkpoint's body)."""
        return {
            "tail": [self.tail_seg, self.tail_off, self.last_lsn],
            "index": [
                [lsn, s, o] for lsn, (s, o) in zip(self.index_lsns, self.index_pos, strict=True)
            ],
            "runs": self.runs,
            "ckpts": [list(c) + [self.ckpt_blobs[c.ckpt_id]] for c in self.ckpts],
            "holes": [list(h) for h in self.holes],
            "dropped": self.dropped,
        }

    @classmethod
    def from_body(cls, body: dict) -> StoreState:
        """Inverse of `to_body`; raises KeyError/TypeError/ValueError on a malformed body."""
        s = cls()
        s.tail_seg, s.tail_off, s.last_lsn = body["tail"]
        for lsn, seg, off in body["index"]:
            s.index_lsns.append(lsn)
            s.index_pos.append((seg, off))
        s.runs = {k: list(v) for k, v in body["runs"].items()}
        # Index checkpoints older than holes and drops have neither key.
        s.holes = [Lost(*h) for h in body.get("holes", [])]
        s.dropped = dict(body.get("dropped", {}))
        for c in body["ckpts"]:
            blobs = c[7]
            info = CheckpointInfo(*c[:7])
            s.ckpts.append(info)
            s.ckpt_blobs[info.ckpt_id] = blobs
            for _raw_len, refs in blobs:
                for ref in refs:
                    add_to_catalog(s.pages, ref)
        return s
