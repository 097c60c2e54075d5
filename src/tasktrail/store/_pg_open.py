"""Opening a PostgreSQL database for tasktrail: numbered migrations under an advisory lock.

``store/migrations_pg/NNNN_name.sql`` are applied in order, once each. The table
``tasktrail_schema`` holds the number of the last one applied. All of it runs in one
transaction that first takes a transaction-level advisory lock, so processes starting
together against a new database wait for each other and apply each migration once
(PostgreSQL DDL is transactional: a failed migration leaves nothing behind).
"""

from __future__ import annotations

import functools
import re
import zlib
from importlib import resources
from typing import Final

import asyncpg

from tasktrail.errors import IncompatibleSchemaError

__all__ = ["init_schema", "lock_keys", "migrations"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
LOCK_CLASS: Final = 0x7A5C  # the first half of every tasktrail advisory lock key
"""Advisory locks take (LOCK_CLASS, key): ``key`` names the schema and the purpose."""


@functools.cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """(number, file name, script) of every PostgreSQL migration, in order."""
    found = []
    for entry in resources.files("tasktrail.store.migrations_pg").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text()))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, got {numbers}")
    return tuple(found)


def lock_keys(schema: str) -> tuple[int, int]:
    """(append key, migration key): advisory lock keys of the tasktrail tables in ``schema``."""
    base = zlib.crc32(schema.encode()) & 0x3FFFFFFF
    return base, base | 0x40000000


async def init_schema(conn: asyncpg.Connection, *, schema: str, where: str) -> None:
    """Apply the pending migrations to ``schema``, safely beside other processes."""
    known = len(migrations())
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, lock_keys(schema)[1])
        await conn.execute("CREATE TABLE IF NOT EXISTS tasktrail_schema (version INTEGER NOT NULL)")
        current = await conn.fetchval("SELECT max(version) FROM tasktrail_schema") or 0
        if current > known:
            raise IncompatibleSchemaError(where, current, known)
        for number, _name, script in migrations():
            if number > current:
                await conn.execute(script)
                await conn.execute("INSERT INTO tasktrail_schema VALUES ($1)", number)
