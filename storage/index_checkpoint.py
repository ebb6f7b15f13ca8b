"""Index checkpoints: the store's derived state saved at an LSN, written and read here.

An index checkpoint lets recovery redo only the log after it (DESIGN §4: recovery on open is
bounded by the work since the last one). It is derived data: a missing or damaged index file
loses nothing, recovery then redoes the whole log. Writer and reader share this module so the
file's name, seal and the MANIFEST entry pointing at it are stated once (FORMAT.md, "Index").
"""

from __future__ import annotations

import contextlib

from .errors import UNREADABLE, StoreError, os_phrase
from .format import INDEX_DIR, INDEX_MAGIC
from .fsbase import FileSystem
from .manifest import Manifest, seal, unseal, write_manifest
from .records import Problem
from .state import StoreState


def write_index(fs: FileSystem, root: str, state: StoreState, manifest: Manifest) -> Manifest:
    """Write an index checkpoint of `state` and point the MANIFEST at it; the caller holds the
    log lock. Returns the new MANIFEST, which the caller adopts before `remove_older` runs (so a
    failure there never leaves it holding a MANIFEST that names a removed file)."""
    name = f"{INDEX_DIR}/{state.last_lsn:016x}.idx"
    path = f"{root}/{name}"
    fs.write_file(path, seal(INDEX_MAGIC, state.to_body()))
    fs.fsync(path)
    fs.fsync_dir(f"{root}/{INDEX_DIR}")
    new = Manifest(
        store_id=manifest.store_id,
        segments=manifest.segments,
        index={
            "file": name,
            "lsn": state.last_lsn,
            "seg_no": state.tail_seg,
            "offset": state.tail_off,
        },
    )
    write_manifest(fs, root, new)
    return new


def remove_older(fs: FileSystem, root: str, manifest: Manifest) -> None:
    """Remove the index files other than the one `manifest` names (it is durable by now)."""
    name = manifest.index["file"] if manifest.index else None
    for old in fs.listdir(f"{root}/{INDEX_DIR}"):
        if f"{INDEX_DIR}/{old}" != name:
            with contextlib.suppress(FileNotFoundError):
                fs.remove(f"{root}/{INDEX_DIR}/{old}")


def load_index(
    fs: FileSystem, root: str, manifest: Manifest, problems: list | None = None
) -> StoreState:
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
        # A "newer" index of a store whose MANIFEST this florql reads is a damaged header:
        # the index is derived, so it is redone either way.
        message = str(exc)
    except UNREADABLE as exc:
        message = f"index checkpoint {path} {os_phrase(exc)}; recovery redid the whole log"
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        message = f"index checkpoint {path} is unusable ({exc}); recovery redid the whole log"
    if problems is not None:
        problems.append(Problem("index", path, 0, idx.get("lsn"), message))
    return StoreState()
