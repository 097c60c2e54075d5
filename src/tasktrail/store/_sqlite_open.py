"""Opening an SQLite database for tasktrail: pragmas, WAL, numbered migrations."""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import TYPE_CHECKING, TypeAlias

from tasktrail.errors import CorruptDatabaseError, IncompatibleSchemaError, StorageBusyError
from tasktrail.store._migrate import migrations

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["connect", "init_schema", "open_connection"]


def _pragmas(busy_timeout: float, synchronous: str) -> list[str]:
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}",
        f"PRAGMA synchronous = {synchronous}",
        "PRAGMA foreign_keys = OFF",
    ]


async def connect(path: str, *, busy_timeout: float, synchronous: str) -> aiosqlite.Connection:
    """A reading connection in autocommit mode with tasktrail's pragmas."""
    import aiosqlite  # here: importing tasktrail loads no database driver

    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in _pragmas(busy_timeout, synchronous):
            await db.execute(pragma)
    except BaseException:
        await db.close()
        raise
    return db


def open_connection(path: str, *, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """The writing connection (used from the store's writer thread only), in autocommit
    mode: every transaction is explicit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in _pragmas(busy_timeout, synchronous):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def init_schema(conn: sqlite3.Connection, path: str, *, busy_timeout: float) -> None:
    """Switch to WAL and apply the pending migrations, safely beside other processes."""
    # journal_mode=WAL is persistent; switching needs a moment alone with the file, so
    # processes racing to create it retry within the busy timeout.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if row is None or str(row[0]).lower() != "wal":
        raise StorageBusyError(f"could not switch {path} to WAL mode (got {row!r})")
    for number, _name, statements in migrations():
        if _user_version(conn) >= number:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _user_version(conn) < number:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    current = _user_version(conn)
    if current > len(migrations()):
        raise IncompatibleSchemaError(path, current, len(migrations()))
    check_shape(conn, path)


Shape: TypeAlias = dict[str, tuple[tuple[bytes, bytes, int, int], ...]]
"""Each table's columns: (name, declared type, not null, primary key position)."""


def check_shape(conn: sqlite3.Connection, path: str) -> None:
    """Raise CorruptDatabaseError when a table of the schema does not have the columns the
    migrations give it.

    SQLite reads a table's columns from the ``CREATE TABLE`` text it stores; a damaged byte
    there (one bit flip turned a space into 0xA0) changes a column's name or type and shifts
    every value after it, with no error from SQLite itself. Tables of the user's own are
    left alone.
    """
    found = _shape(conn, tables=tuple(_expected_shape()))
    for table, columns in _expected_shape().items():
        if found[table] != columns:
            raise CorruptDatabaseError(
                f"{path} is damaged: the stored definition of table {table!r} is not the "
                "one tasktrail created (restore the database from a backup)"
            )


@functools.cache
def _expected_shape() -> Shape:
    """The shape every migration applied gives a new database."""
    conn = sqlite3.connect(":memory:")
    try:
        for _number, _name, statements in migrations():
            for statement in statements:
                conn.execute(statement)
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return _shape(conn, tables=tuple(tables))
    finally:
        conn.close()


def _shape(conn: sqlite3.Connection, *, tables: tuple[str, ...]) -> Shape:
    """The columns of ``tables`` as SQLite reads them (names and types as bytes: a damaged
    definition need not be UTF-8)."""
    return {
        table: tuple(
            conn.execute(
                'SELECT CAST(name AS BLOB), CAST(type AS BLOB), "notnull", pk '
                "FROM pragma_table_info(?)",
                (table,),
            ).fetchall()
        )
        for table in tables
    }
