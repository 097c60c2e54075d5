"""Event stores: the contract, its backends, and :func:`open_store` to pick one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tasktrail.errors import InvalidInputError
from tasktrail.store._plan import AppendResult
from tasktrail.store.base import EventStore, VerifyReport
from tasktrail.store.sqlite import SQLiteEventStore
from tasktrail.store.subscription import Subscription

__all__ = [
    "AppendResult",
    "EventStore",
    "SQLiteEventStore",
    "Subscription",
    "VerifyReport",
    "open_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(
    database: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
) -> SQLiteEventStore:
    """The store for ``database``: a SQLite file path, or a ``postgresql://`` URL.

    Raises:
        InvalidInputError: ``database`` names a backend this installation does not have.
    """
    if isinstance(database, str) and database.startswith(POSTGRES_SCHEMES):
        raise InvalidInputError(
            f"{database!r} is a PostgreSQL URL, and this build of tasktrail has no PostgreSQL "
            "backend yet; use a SQLite file path"
        )
    return SQLiteEventStore(database, clock=clock)
