"""The one exception tree of florql.

It lives in the storage package because the lower layer raises from it and must not import the
upper one; `florql.errors` re-exports every class, so users write `florql.errors.QueryError`.

Every message names the problem and what to do about it. `exit_code` is what the CLI returns:
1 when the store is damaged or a replay failed, 2 for bad input.

>>> issubclass(CorruptionError, FlorqlError), CorruptionError.exit_code, BadInputError.exit_code
(True, 1, 2)
"""

from __future__ import annotations


class FlorqlError(Exception):
    """Base of every error florql raises on purpose."""

    exit_code = 1


class BadInputError(FlorqlError):
    """The caller asked for something invalid (a path, a flag, a value); nothing was changed."""

    exit_code = 2


class StoreError(FlorqlError):
    """The store cannot be used as asked (wrong kind of path, newer format, locked, unwritable)."""

    exit_code = 2


class CorruptionError(StoreError):
    """Bytes on disk fail their checksum or framing somewhere other than the log's torn tail.

    Attributes name the location so a user can inspect it: `segment`, `offset`, `lsn`.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        segment: str | None = None,
        offset: int | None = None,
        lsn: int | None = None,
    ) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset
        self.lsn = lsn


class RecordError(FlorqlError):
    """Recording a training script failed for a reason in florql's control (bad API use)."""

    exit_code = 2


class QueryError(FlorqlError):
    """A query is malformed, forbidden, or names something that does not exist."""

    exit_code = 2


class ReplayError(FlorqlError):
    """A hindsight replay could not be planned or did not complete."""

    exit_code = 1


class EditError(ReplayError):
    """An edit of the script cannot be replayed exactly (where it sits, what it reads or
    changes); the message names file and line and how to rewrite it. Nothing ran."""

    exit_code = 2


# File-system errors that mean "this file is gone or not ours to read": a store file in such a
# state is damage (reported with its path, stepped over by a tolerant open, quarantined by a
# repair). Other OSErrors (EIO, ENOSPC, an injected fault) propagate: a transient failure must
# never get good data quarantined.
UNREADABLE = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def os_phrase(exc: OSError) -> str:
    """What an OSError says about a file, as a verb phrase.

    >>> os_phrase(FileNotFoundError(2, "No such file")), os_phrase(PermissionError(13, "Denied"))
    ('is missing', 'cannot be read (Denied)')
    """
    if isinstance(exc, FileNotFoundError):
        return "is missing"
    return f"cannot be read ({exc.strerror or exc})"


def unreadable(path: str, exc: OSError, what: str) -> CorruptionError:
    """The one-sentence error for a store file that is missing or cannot be read."""
    fix = "fix its permissions" if isinstance(exc, PermissionError) else "restore it from a backup"
    return CorruptionError(
        f"{what} {path} {os_phrase(exc)}; {fix}, or run `florql check --repair` to keep what "
        "is intact",
        segment=path,
        offset=0,
    )


def write_failed(root: str, exc: OSError) -> StoreError:
    """The error for an I/O failure while writing: nothing it was writing was acknowledged."""
    return StoreError(
        f"could not write to the store at {root} ({exc.strerror or exc}); nothing since the last "
        "successful flush was saved: check free disk space and permissions, then retry"
    )
