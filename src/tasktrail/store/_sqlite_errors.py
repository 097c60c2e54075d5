"""Translation of ``sqlite3`` errors into tasktrail errors: the one place it happens.

A table keyed by SQLite result code (:data:`BY_CODE`), as httpx maps its transport's
exceptions: what a code means is a row, not a branch. Two things come before it: a file
system that refuses this process the file or its directory is named as such
(:func:`permission_problem`), and an error without a code gets the one its message names.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Final, TypeAlias

from tasktrail.errors import (
    CorruptDatabaseError,
    ReadOnlyStorageError,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TasktrailError,
)

__all__ = [
    "BY_CODE",
    "CODE_BY_MESSAGE",
    "OTHER",
    "PERMISSION_CODES",
    "DriverError",
    "permission_problem",
    "result_code",
    "translate",
    "translating",
]

_Row: TypeAlias = tuple[type[TasktrailError], str]
"""(the tasktrail error, its message): ``{where}`` is `` (path)``, ``{text}`` the driver's."""

_BUSY: Final[_Row] = (
    StorageBusyError,
    "the database{where} stayed locked by another connection past the busy timeout; "
    "nothing was written: retry, or raise busy_timeout",
)
_READ_ONLY: Final[_Row] = (
    ReadOnlyStorageError,
    "the database{where} is read-only; check the permissions of the file and of its "
    "directory (SQLite writes a -wal and -shm file beside it)",
)
_CORRUPT: Final[_Row] = (
    CorruptDatabaseError,
    "the file{where} is not a tasktrail database or is damaged: {text}",
)
BY_CODE: Final[Mapping[int, _Row]] = {
    sqlite3.SQLITE_BUSY: _BUSY,
    sqlite3.SQLITE_LOCKED: _BUSY,
    sqlite3.SQLITE_FULL: (
        StorageFullError,
        "the disk holding the database{where} is full; the write was rolled back and "
        "nothing acknowledged was lost: free space and retry",
    ),
    sqlite3.SQLITE_READONLY: _READ_ONLY,
    sqlite3.SQLITE_PERM: _READ_ONLY,
    sqlite3.SQLITE_CORRUPT: _CORRUPT,
    sqlite3.SQLITE_NOTADB: _CORRUPT,
    sqlite3.SQLITE_CANTOPEN: (
        StorageError,
        "cannot open the database{where}: {text}; does the directory exist?",
    ),
    sqlite3.SQLITE_IOERR: (StorageError, "disk I/O error on the database{where}: {text}"),
}
"""What each SQLite result code means (https://sqlite.org/rescode.html). An extended code
(``SQLITE_BUSY_SNAPSHOT``...) is looked up itself first, then as its primary code (its low
8 bits); a code not here is a :class:`~tasktrail.StorageError`."""
OTHER: Final[_Row] = (StorageError, "database error{where}: {text}")
"""The translation of any other driver error."""
PERMISSION_CODES: Final = frozenset(
    {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR}
)
"""The codes an unusable file or directory causes: before :data:`BY_CODE`, the file system
is asked (:func:`permission_problem`), so the message names the path and the user."""
CODE_BY_MESSAGE: Final[Mapping[str, int]] = {
    "database is locked": sqlite3.SQLITE_BUSY,
    "database table is locked": sqlite3.SQLITE_LOCKED,
    "database schema is locked": sqlite3.SQLITE_LOCKED,
    "database or disk is full": sqlite3.SQLITE_FULL,
    "attempt to write a readonly database": sqlite3.SQLITE_READONLY,
    "database disk image is malformed": sqlite3.SQLITE_CORRUPT,
    "file is not a database": sqlite3.SQLITE_NOTADB,
    "Could not decode to UTF-8": sqlite3.SQLITE_CORRUPT,
    "unable to open database file": sqlite3.SQLITE_CANTOPEN,
    "disk I/O error": sqlite3.SQLITE_IOERR,
}
"""The code of an error that carries none (raised by Python's ``sqlite3`` itself, or
re-raised by a wrapper from SQLite's message): SQLite's text for the code, found in the
error's message. ``Could not decode to UTF-8`` is the module's own: damaged text."""


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


def _cannot_write(path: str) -> bool:
    """Whether an open that failed on ``path`` met an existing file this process may not
    write (or whose directory it may not write: a read-only mount): a read-only database,
    not a bad path."""
    if not path or not os.path.exists(path):
        return False
    directory = os.path.dirname(os.path.abspath(path))
    return not (os.access(path, os.W_OK) and os.access(directory, os.W_OK))


def result_code(err: sqlite3.Error) -> int:
    """The (extended) result code of a driver error: its own, else the one its message
    names (:data:`CODE_BY_MESSAGE`), else 0."""
    code = getattr(err, "sqlite_errorcode", None)
    if code:
        return int(code)
    text = str(err)
    return next((code for sign, code in CODE_BY_MESSAGE.items() if sign in text), 0)


def translate(err: sqlite3.Error | UnicodeDecodeError, path: str = "") -> TasktrailError:
    """The tasktrail error for a driver error (chain it with ``raise ... from err``)."""
    where = f" ({path})" if path else ""
    if isinstance(err, UnicodeDecodeError):  # damaged text in a row or in the schema
        return CorruptDatabaseError(
            f"the database{where} holds text that is not valid UTF-8 ({err}); it is damaged: "
            "run verify(), and restore it from a backup if the log is affected"
        )
    code = result_code(err)
    primary = code & 0xFF
    if primary in PERMISSION_CODES and (denied := permission_problem(path)):
        why, readable = denied
        return ReadOnlyStorageError(why) if readable else StorageError(why)
    if primary == sqlite3.SQLITE_CANTOPEN and _cannot_write(path):
        primary = code = sqlite3.SQLITE_READONLY
    error, message = BY_CODE.get(code) or BY_CODE.get(primary) or OTHER
    return error(message.format(where=where, text=str(err)))


@contextlib.contextmanager
def translating(path: str = "") -> Iterator[None]:
    """Re-raise any ``sqlite3.Error`` inside the block as a tasktrail error."""
    try:
        yield
    except DriverError as err:
        raise translate(err, path) from err
