"""Event stores: the contract, its backends, and :func:`open_store` to pick one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tasktrail.errors import StorageError
from tasktrail.store._plan import AppendResult
from tasktrail.store._validate import redact_url
from tasktrail.store.base import EventStore, VerifyReport
from tasktrail.store.sqlite import SQLiteEventStore
from tasktrail.store.subscription import Subscription

__all__ = [
    "AppendResult",
    "EventStore",
    "PostgresEventStore",
    "SQLiteEventStore",
    "Subscription",
    "VerifyReport",
    "open_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(
    database: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
) -> EventStore:
    """The store for ``database``: a SQLite file path, or a ``postgresql://`` URL.

    The store is not open yet: ``async with open_store(...) as store:``.

    Raises:
        StorageError: ``database`` is a PostgreSQL URL and asyncpg is not installed
            (``pip install 'tasktrail[postgres]'``).
    """
    if isinstance(database, str) and database.startswith(POSTGRES_SCHEMES):
        try:
            from tasktrail.store.postgres import PostgresEventStore
        except ImportError as err:
            raise StorageError(
                f"{redact_url(database)} is a PostgreSQL URL, and the PostgreSQL backend needs "
                f"asyncpg ({err}); install it with: pip install 'tasktrail[postgres]'"
            ) from err
        return PostgresEventStore(database, clock=clock)
    return SQLiteEventStore(database, clock=clock)


def __getattr__(name: str) -> object:
    """``PostgresEventStore`` on first use, so that importing tasktrail needs no asyncpg."""
    if name == "PostgresEventStore":
        from tasktrail.store.postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
