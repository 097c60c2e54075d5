"""The real PostgreSQL server the PostgreSQL tests run against: one fresh database per
test session, one fresh schema per test. Never a mock. And ``Databases``: new databases of
either backend (SQLite files, schemas on this server), as many as a test needs.

The server is ``$TASKTRAIL_TEST_POSTGRES`` (an admin URL; default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the tests that
need it FAIL with a message saying so: CI makes sure the server is up.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import asyncpg
import pytest

ADMIN_URL = os.environ.get(
    "TASKTRAIL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _with_database(url: str, database: str, **query: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(
        parts._replace(path=f"/{database}", query=urllib.parse.urlencode(query))
    )


async def _admin(url: str, *statements: str) -> Any:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class PostgresServer:
    """A fresh database on the test server, created on first use, dropped at the end."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.database = f"tasktrail_test_{secrets.token_hex(4)}"
        self.url = _with_database(admin_url, self.database)
        self._schemas = itertools.count(1)
        self._created = False

    def _run(self, url: str, *statements: str) -> None:
        try:
            asyncio.run(_admin(url, *statements))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            pytest.fail(
                f"PostgreSQL is not reachable at {url} ({type(err).__name__}: {err}). The "
                "PostgreSQL tests need a real server: start it (e.g. pg_ctlcluster 15 main "
                "start) or point $TASKTRAIL_TEST_POSTGRES at one.",
                pytrace=False,
            )

    def fresh_url(self) -> str:
        """The URL of a new, empty schema in this session's database."""
        if not self._created:
            self._run(self.admin_url, f'CREATE DATABASE "{self.database}"')
            self._created = True
        schema = f"t{next(self._schemas):04d}"
        self._run(self.url, f"CREATE SCHEMA {schema}")
        return _with_database(self.admin_url, self.database, search_path=schema)

    def drop(self) -> None:
        """Drop the session's database (and every schema in it)."""
        if self._created:
            self._run(self.admin_url, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


class Databases:
    """New, empty databases of one backend, as many as a test asks for: SQLite file paths
    in the test's directory, or postgresql:// URLs of new schemas on the real server."""

    def __init__(self, backend: str, directory: Path, server: PostgresServer | None) -> None:
        self.backend = backend
        self._directory = directory
        self._server = server
        self._files = itertools.count(1)

    def new(self) -> str:
        """The path or URL of a new, empty database (blocking: call it outside event loops)."""
        if self._server is not None:
            return self._server.fresh_url()
        number = next(self._files)
        return str(self._directory / ("tasks.db" if number == 1 else f"tasks-{number}.db"))
