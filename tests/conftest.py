"""Shared fixtures: a fresh store per test, asyncio debug mode, a hypothesis profile."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

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
