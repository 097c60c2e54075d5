"""Opening an SQLite database for tasktrail: pragmas, WAL, numbered migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import aiosqlite

from tasktrail.errors import IncompatibleSchemaError, StorageBusyError
from tasktrail.store._migrate import migrations

__all__ = ["connect", "init_schema"]


async def connect(path: str, *, busy_timeout: float, synchronous: str) -> aiosqlite.Connection:
    """A connection in autocommit mode (transactions are explicit) with tasktrail's pragmas."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        await db.execute(f"PRAGMA synchronous = {synchronous}")
        await db.execute("PRAGMA foreign_keys = OFF")
    except BaseException:
        await db.close()
        raise
    return db


async def init_schema(db: aiosqlite.Connection, path: str, *, busy_timeout: float) -> None:
    """Switch to WAL and apply the pending migrations, safely beside other processes."""
    # journal_mode=WAL is persistent; switching needs a moment alone with the file, so
    # processes racing to create it retry within the busy timeout.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            async with db.execute("PRAGMA journal_mode = WAL") as cursor:
                row = await cursor.fetchone()
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
    if row is None or str(row[0]).lower() != "wal":
        raise StorageBusyError(f"could not switch {path} to WAL mode (got {row!r})")
    for number, _name, statements in migrations():
        async with db.execute("PRAGMA user_version") as cursor:
            current = (await cursor.fetchone() or (0,))[0]
        if current >= number:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("PRAGMA user_version") as cursor:
                current = (await cursor.fetchone() or (0,))[0]
            if current < number:
                for statement in statements:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
    async with db.execute("PRAGMA user_version") as cursor:
        current = (await cursor.fetchone() or (0,))[0]
    if current > len(migrations()):
        raise IncompatibleSchemaError(path, current, len(migrations()))
