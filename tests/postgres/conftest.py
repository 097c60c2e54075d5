"""Fixtures of the PostgreSQL-only tests: a fresh schema URL, a raw admin connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgserver import PostgresServer


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty schema on the real PostgreSQL server."""
    return postgres_server.fresh_url()


@pytest.fixture
async def raw(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test's schema (not through tasktrail)."""
    conn = await asyncpg.connect(pg_url)
    try:
        yield conn
    finally:
        await conn.close()
