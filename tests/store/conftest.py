"""The store contract runs against every backend through the ``backend_store`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tasktrail import PostgresEventStore, SQLiteEventStore

StoreFactory = Callable[..., Any]


@pytest.fixture
def open_store(database: str) -> StoreFactory:
    """A factory opening a store of the parametrized backend on one fresh database."""

    def factory(**settings: Any) -> SQLiteEventStore | PostgresEventStore:
        if database.startswith("postgresql://"):
            return PostgresEventStore(database, **settings)
        return SQLiteEventStore(database, **settings)

    return factory


@pytest.fixture
async def backend_store(open_store: StoreFactory) -> AsyncIterator[Any]:
    """An open store of the parametrized backend."""
    async with open_store() as store:
        yield store
