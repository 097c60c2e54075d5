"""Shared fixtures: a fresh store per test, on each backend; asyncio debug mode; a
hypothesis profile."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from pgserver import Databases, PostgresServer
from tasktrail import SQLiteEventStore

# Every event loop runs in debug mode: never-awaited coroutines and slow callbacks show up.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")

settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=20, stateful_step_count=20, deadline=None)
settings.register_profile(
    "soak",
    max_examples=2000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a new database file."""
    return tmp_path / "tasks.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteEventStore]:
    """An open store on a new file, closed after the test."""
    async with SQLiteEventStore(db_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This test session's own database on the real PostgreSQL server (dropped at the end)."""
    server = PostgresServer()
    yield server
    server.drop()


BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres")]


@pytest.fixture(params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Databases:
    """New databases of each backend, for tests that need several (each backend in turn)."""
    server = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    return Databases(request.param, tmp_path, server)


@pytest.fixture
def database(databases: Databases) -> str:
    """A new, empty database of each backend: a SQLite file path or a postgresql:// URL."""
    return databases.new()
