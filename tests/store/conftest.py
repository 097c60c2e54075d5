"""The store contract runs against every backend through the ``backend_store`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tasktrail import SQLiteEventStore

StoreFactory = Callable[..., Any]


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite")])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory opening a store of the parametrized backend on one database."""
    path = tmp_path / "contract.db"

    def factory(**settings: Any) -> SQLiteEventStore:
        return SQLiteEventStore(path, **settings)

    return factory


@pytest.fixture
async def backend_store(open_store: StoreFactory) -> AsyncIterator[Any]:
    """An open store of the parametrized backend."""
    async with open_store() as store:
        yield store
