"""Translation of ``sqlite3`` errors into tasktrail errors: the one place it happens."""

from __future__ import annotations

import contextlib
import os
import pwd
import sqlite3
from collections.abc import Iterator

from tasktrail.errors import (
    CorruptDatabaseError,
    ReadOnlyStorageError,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TasktrailError,
)

__all__ = ["DriverError", "permission_problem", "translate", "translating"]

# Primary result codes, https://sqlite.org/rescode.html
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _NOTADB, _PERM = 13, 14, 26, 3


DriverError = (sqlite3.Error, UnicodeDecodeError)
"""What the driver raises: its own errors, and UnicodeDecodeError for damaged text."""


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _may(path: str, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def permission_problem(path: str) -> tuple[str, bool] | None:
    """Why this process may not open the database ``path`` for reading and writing
    (creating it if missing), as a message saying "permission denied" and naming the path
    and the user, and whether reading it is allowed; None when the file system's
    permissions are not the problem."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    blocked = directory
    while blocked != os.path.dirname(blocked) and not os.path.exists(blocked):
        blocked = os.path.dirname(blocked)  # the deepest ancestor this process can see
    denied = f"permission denied: {_user()} may not"
    if not _may(blocked, os.X_OK) or (blocked != directory and not _may(blocked, os.R_OK)):
        return f"cannot open the database {path}: {denied} enter the directory {blocked}", False
    if blocked != directory:
        return None  # the directory does not exist: not a question of permissions
    if not os.path.exists(full):
        if _may(directory, os.W_OK):
            return None
        return f"cannot create the database {path}: {denied} write to {directory}", False
    if not _may(full, os.R_OK):
        return f"cannot open the database {path}: {denied} read it", False
    if not _may(full, os.W_OK):
        return f"the database {path} is read-only: {denied} write it", True
    beside = [f"{full}-wal", f"{full}-shm"]
    if not _may(directory, os.W_OK) and not all(
        os.path.exists(f) and _may(f, os.W_OK) for f in beside
    ):
        return (
            f"the database {path} is read-only: {denied} write to its directory {directory}, "
            "where SQLite keeps its -wal and -shm files",
            True,
        )
    return None


def _cannot_write(code: int, path: str) -> bool:
    """An open that failed on an existing file this process may not write (or whose
    directory it may not write: a read-only mount): a read-only database, not a bad path."""
    if code != _CANTOPEN or not path or not os.path.exists(path):
        return False
    directory = os.path.dirname(os.path.abspath(path))
    return not (os.access(path, os.W_OK) and os.access(directory, os.W_OK))


def translate(err: sqlite3.Error | UnicodeDecodeError, path: str = "") -> TasktrailError:
    """The tasktrail error for a driver error (chain it with ``raise ... from err``)."""
    where = f" ({path})" if path else ""
    if isinstance(err, UnicodeDecodeError):  # damaged text in a row or in the schema
        return CorruptDatabaseError(
            f"the database{where} holds text that is not valid UTF-8 ({err}); it is damaged: "
            "run verify(), and restore it from a backup if the log is affected"
        )
    code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
    text = str(err)
    if code in (_BUSY, _LOCKED) or "locked" in text:
        return StorageBusyError(
            f"the database{where} stayed locked by another connection past the busy "
            "timeout; nothing was written: retry, or raise busy_timeout"
        )
    if code == _FULL or "disk is full" in text:
        return StorageFullError(
            f"the disk holding the database{where} is full; the write was rolled back "
            "and nothing acknowledged was lost: free space and retry"
        )
    if code in (_CANTOPEN, _READONLY, _PERM, _IOERR) and (denied := permission_problem(path)):
        why, readable = denied
        return ReadOnlyStorageError(why) if readable else StorageError(why)
    if code in (_READONLY, _PERM) or "readonly" in text or _cannot_write(code, path):
        return ReadOnlyStorageError(
            f"the database{where} is read-only; check the permissions of the file and "
            "of its directory (SQLite writes a -wal and -shm file beside it)"
        )
    if code in (_CORRUPT, _NOTADB) or any(
        sign in text for sign in ("malformed", "not a database", "decode to UTF-8")
    ):
        return CorruptDatabaseError(
            f"the file{where} is not a tasktrail database or is damaged: {text}"
        )
    if code == _CANTOPEN:
        return StorageError(f"cannot open the database{where}: {text}; does the directory exist?")
    if code == _IOERR:
        return StorageError(f"disk I/O error on the database{where}: {text}")
    return StorageError(f"database error{where}: {text}")


@contextlib.contextmanager
def translating(path: str = "") -> Iterator[None]:
    """Re-raise any ``sqlite3.Error`` inside the block as a tasktrail error."""
    try:
        yield
    except DriverError as err:
        raise translate(err, path) from err
