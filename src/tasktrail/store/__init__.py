"""Event stores: the contract, its backends, and :func:`open_store` to pick one."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from tasktrail.errors import InvalidInputError, StorageError
from tasktrail.store._claim import ClaimRequest, ClaimResult
from tasktrail.store._controls import Control
from tasktrail.store._latency import CommitStatistics
from tasktrail.store._plan import AppendResult
from tasktrail.store._validate import redact_url
from tasktrail.store._workers import WorkerInfo
from tasktrail.store.base import EventStore, VerifyReport
from tasktrail.store.sqlite import SQLiteEventStore
from tasktrail.store.subscription import Subscription

__all__ = [
    "AppendResult",
    "ClaimRequest",
    "ClaimResult",
    "CommitStatistics",
    "Control",
    "EventStore",
    "PostgresEventStore",
    "SQLiteEventStore",
    "Subscription",
    "VerifyReport",
    "WorkerInfo",
    "open_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
"""A URL's scheme: a path that starts like one is refused, not taken for a directory."""


def open_store(
    database: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
) -> EventStore:
    """The store for ``database``: a SQLite file path, or a ``postgresql://`` URL.

    The store is not open yet: ``async with open_store(...) as store:``.

    Anything else of the form ``scheme://...`` (``mysql://``, ``sqlite://``, ``file://``)
    is refused rather than taken for a file path: write a SQLite path as a path
    (``./tasks.db``, ``/var/lib/app/tasks.db``).

    Raises:
        InvalidInputError: ``database`` is empty, or a URL of a scheme other than
            ``postgresql://`` and ``postgres://``.
        StorageError: ``database`` is a PostgreSQL URL and asyncpg is not installed
            (``pip install 'tasktrail[postgres]'``).
    """
    if isinstance(database, str):
        _check_target(database)
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


def _check_target(database: str) -> None:
    if not database.strip():
        raise InvalidInputError(
            f"the database is {database!r}: pass a SQLite file path or a postgresql:// URL"
        )
    scheme = _SCHEME.match(database)
    if scheme and not database.startswith(POSTGRES_SCHEMES):
        hint = (
            "; for SQLite, pass the file's path itself (./tasks.db, /var/lib/app/tasks.db)"
            if scheme[1].lower() in ("sqlite", "sqlite3", "file")
            else ""
        )
        raise InvalidInputError(
            f"unsupported database URL {redact_url(database)!r}: tasktrail stores to a SQLite "
            f"file (pass its path) or to PostgreSQL ({' or '.join(POSTGRES_SCHEMES)}){hint}"
        )


def __getattr__(name: str) -> object:
    """``PostgresEventStore`` on first use, so that importing tasktrail needs no asyncpg."""
    if name == "PostgresEventStore":
        from tasktrail.store.postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
