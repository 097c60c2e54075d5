"""Every runtime test runs on each backend: ``db_path`` is a SQLite file or a PostgreSQL schema."""

from __future__ import annotations

import pytest


@pytest.fixture
def db_path(database: str) -> str:
    """A new database of each backend (SQLite file, PostgreSQL schema) for every test."""
    return database
