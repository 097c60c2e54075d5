"""asyncpg errors: which are worth a retry, and their tasktrail translation. The one place.

Transient failures (a serialization failure or deadlock, a connection dropped, terminated
by ``pg_terminate_backend`` or refused while the server restarts) are retried inside the
store by :func:`retrying`, with backoff, for at most the store's ``retry_timeout``; only
then, or for a permanent failure, the caller gets a :class:`~tasktrail.StorageError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, NamedTuple, TypeVar

import asyncpg

from tasktrail.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    ReadOnlyStorageError,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TasktrailError,
)

__all__ = ["BY_SQLSTATE", "OTHER", "Meaning", "is_transient", "meaning", "retrying", "translate"]

_log = logging.getLogger("tasktrail.store.postgres")

T = TypeVar("T")


class Meaning(NamedTuple):
    """What a SQLSTATE means to tasktrail: the error it becomes, and whether trying again
    on a fresh connection may succeed (the store retries those for ``retry_timeout``)."""

    error: type[TasktrailError]
    message: str
    """``{where}`` is the redacted URL, ``{text}`` the server's message."""
    transient: bool = False


_BUSY: Final = Meaning(
    StorageBusyError,
    "PostgreSQL ({where}) stayed too busy to finish the operation ({text}); nothing was "
    "written: retry later, or raise retry_timeout",
    transient=True,
)
_UNREACHABLE: Final = Meaning(
    StorageError,
    "cannot reach PostgreSQL at {where} ({text}); nothing acknowledged was lost: check that "
    "the server is up and reachable, then retry",
    transient=True,
)
_READ_ONLY: Final = Meaning(
    ReadOnlyStorageError,
    "PostgreSQL ({where}) refused the write ({text}); check that the role may write to the "
    "tasktrail tables and that the server is not a read-only standby",
)
_CANNOT_OPEN: Final = Meaning(StorageError, "cannot open the PostgreSQL database {where}: {text}")
_BAD_TEXT: Final = Meaning(InvalidInputError, "PostgreSQL cannot store this text: {text}")
_BAD_ARGUMENT: Final = Meaning(InvalidInputError, "PostgreSQL refused an argument: {text}")

BY_SQLSTATE: Final[Mapping[str, Meaning]] = {
    "40001": _BUSY,  # serialization_failure
    "40P01": _BUSY,  # deadlock_detected
    "55P03": _BUSY,  # lock_not_available
    "53300": _BUSY,  # too_many_connections
    "57014": _BUSY._replace(transient=False),  # query_canceled: a statement timeout
    "08": _UNREACHABLE,  # connection exceptions
    "57P01": _UNREACHABLE,  # admin_shutdown: pg_terminate_backend, a fast shutdown
    "57P02": _UNREACHABLE,  # crash_shutdown
    "57P03": _UNREACHABLE,  # cannot_connect_now: the server is starting
    "57P05": _UNREACHABLE,  # idle_session_timeout
    "53100": Meaning(
        StorageFullError,
        "the disk of the PostgreSQL server ({where}) is full; the write was rolled back and "
        "nothing acknowledged was lost: free space and retry",
    ),  # disk_full
    "25006": _READ_ONLY,  # read_only_sql_transaction: a standby
    "42501": _READ_ONLY,  # insufficient_privilege
    "28": _CANNOT_OPEN,  # invalid authorization
    "3D000": _CANNOT_OPEN,  # invalid_catalog_name: no such database
    "22021": _BAD_TEXT,  # character_not_in_repertoire
    "22P05": _BAD_TEXT,  # untranslatable_character
    # data exceptions: asyncpg's own argument checks (an int out of range, raised as
    # DataError 22000), or the server's (a negative LIMIT)
    "22": _BAD_ARGUMENT,
    "P0001": Meaning(StorageError, "{text}"),  # raise_exception: the append-only triggers
    "XX": Meaning(CorruptDatabaseError, "the PostgreSQL database ({where}) is damaged: {text}"),
}
"""What each SQLSTATE means (https://www.postgresql.org/docs/current/errcodes-appendix.html),
keyed by the whole code or by its class (its first two characters): the whole code is
looked up first. An error without a SQLSTATE (a dropped socket, a timeout, asyncpg's own
checks) is placed by :func:`meaning`."""
OTHER: Final = Meaning(StorageError, "PostgreSQL error ({where}): {text}")
"""The translation of any other driver error."""


def _sqlstate(err: BaseException) -> str:
    return str(getattr(err, "sqlstate", "") or "")


def meaning(err: BaseException) -> Meaning:
    """The row of :data:`BY_SQLSTATE` for a driver error; for one without a SQLSTATE,
    :data:`OTHER` unless its type says the connection was lost (transient) or an argument
    was refused."""
    state = _sqlstate(err)
    found = BY_SQLSTATE.get(state) or BY_SQLSTATE.get(state[:2])
    if found is not None:
        return found
    if _connection_lost(err):
        return _UNREACHABLE
    if isinstance(err, ValueError):
        return _BAD_ARGUMENT
    return OTHER


def _connection_lost(err: BaseException) -> bool:
    if isinstance(err, asyncpg.InterfaceError):
        return "closed" in str(err) or "connection" in str(err).lower()
    if isinstance(err, asyncpg.InternalClientError):
        # the protocol lost track of a connection the server ended while it was idle
        return "in progress" in str(err)
    return isinstance(err, OSError | asyncio.TimeoutError | asyncpg.ConnectionDoesNotExistError)


def is_transient(err: BaseException) -> bool:
    """Whether trying again on a fresh connection may succeed."""
    return not isinstance(err, TasktrailError) and meaning(err).transient


def translate(err: BaseException, where: str) -> TasktrailError:
    """The tasktrail error for a driver error (chain it with ``raise ... from err``)."""
    if isinstance(err, TasktrailError):
        return err
    found = meaning(err)
    text = str(err).strip() or type(err).__name__
    return found.error(found.message.format(where=where, text=text))


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    where: str,
    timeout: float,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``operation``, again after each transient failure, until ``timeout`` seconds
    have passed; then, or on a permanent failure, raise the translated error."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            return await operation()
        except TasktrailError:
            raise
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            OSError,
            TimeoutError,
        ) as err:
            if not is_transient(err) or time.monotonic() + delay > deadline:
                raise translate(err, where) from err
            _log.info("%s: %s: %s; trying again", where, type(err).__name__, err)
            if on_retry is not None:
                on_retry(err)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)
