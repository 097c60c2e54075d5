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
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

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

__all__ = ["is_transient", "retrying", "translate"]

_log = logging.getLogger("tasktrail.store.postgres")

T = TypeVar("T")

_TRANSIENT_STATES: Final = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown: pg_terminate_backend, a fast shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting
        "57P05",  # idle_session_timeout
        "53300",  # too_many_connections
    }
)


def _sqlstate(err: BaseException) -> str:
    return str(getattr(err, "sqlstate", "") or "")


def is_transient(err: BaseException) -> bool:
    """Whether trying again on a fresh connection may succeed."""
    if isinstance(err, TasktrailError):
        return False
    state = _sqlstate(err)
    if state in _TRANSIENT_STATES or state.startswith("08"):
        return True
    if isinstance(err, asyncpg.InterfaceError):
        return "closed" in str(err) or "connection" in str(err).lower()
    if isinstance(err, asyncpg.InternalClientError):
        # the protocol lost track of a connection the server ended while it was idle
        return "in progress" in str(err)
    return isinstance(err, OSError | asyncio.TimeoutError | asyncpg.ConnectionDoesNotExistError)


def translate(err: BaseException, where: str) -> TasktrailError:
    """The tasktrail error for a driver error (chain it with ``raise ... from err``)."""
    if isinstance(err, TasktrailError):
        return err
    state = _sqlstate(err)
    text = str(err).strip() or type(err).__name__
    if state in ("40001", "40P01", "55P03", "57014", "53300"):
        return StorageBusyError(
            f"PostgreSQL ({where}) stayed too busy to finish the operation ({text}); "
            "nothing was written: retry later, or raise retry_timeout"
        )
    if is_transient(err):
        return StorageError(
            f"cannot reach PostgreSQL at {where} ({text}); nothing acknowledged was lost: "
            "check that the server is up and reachable, then retry"
        )
    if state == "53100":
        return StorageFullError(
            f"the disk of the PostgreSQL server ({where}) is full; the write was rolled back "
            "and nothing acknowledged was lost: free space and retry"
        )
    if state in ("25006", "42501"):
        return ReadOnlyStorageError(
            f"PostgreSQL ({where}) refused the write ({text}); check that the role may write "
            "to the tasktrail tables and that the server is not a read-only standby"
        )
    if state.startswith("28") or state == "3D000":
        return StorageError(f"cannot open the PostgreSQL database {where}: {text}")
    if state in ("22021", "22P05"):
        return InvalidInputError(f"PostgreSQL cannot store this text: {text}")
    if isinstance(err, ValueError) or state.startswith("22"):
        # a data exception: asyncpg's own argument checks (an int out of range, raised as
        # DataError 22000), or the server's (a negative LIMIT)
        return InvalidInputError(f"PostgreSQL refused an argument: {text}")
    if state == "P0001" and "append-only" in text:
        return StorageError(text)
    if state.startswith("XX"):
        return CorruptDatabaseError(f"the PostgreSQL database ({where}) is damaged: {text}")
    return StorageError(f"PostgreSQL error ({where}): {text}")


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
