"""Storage faults reach the caller as typed errors and lose nothing acknowledged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helpers import new
from tasktrail import (
    IncompatibleSchemaError,
    NewEvent,
    SQLiteEventStore,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TaskCreated,
    Trigger,
)


async def test_disk_full_rolls_back_and_recovers(db_path: Path) -> None:
    """A full database raises StorageFullError; acknowledged events stay; space cures it."""
    async with SQLiteEventStore(db_path) as store:
        await store.append("kept", [new(Trigger.CREATE)])
        writer = store._writer  # the test caps the file's size on the store's own connection
        assert writer is not None
        pages = (await writer.execute_fetchall("PRAGMA page_count"))[0][0]
        await writer.execute(f"PRAGMA max_page_count = {pages}")
        big = "x" * 200_000
        with pytest.raises(StorageFullError, match="full"):
            await store.append("lost", [NewEvent(TaskCreated(agent="a", prompt=big))])
        assert await store.get_task("lost") is None
        assert await store.head() == 1
        await writer.execute("PRAGMA max_page_count = 1073741823")
        result = await store.append("later", [NewEvent(TaskCreated(agent="a", prompt=big))])
        assert result.sequence == 2
        assert (await store.verify()).events == 2


async def test_lock_held_too_long_is_busy(db_path: Path) -> None:
    """A lock held past busy_timeout raises StorageBusyError and writes nothing."""
    async with SQLiteEventStore(db_path, busy_timeout=0.2) as store:
        await store.append("t1", [new(Trigger.CREATE)])
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageBusyError, match="locked"):
                await store.append("t2", [new(Trigger.CREATE)])
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        result = await store.append("t2", [new(Trigger.CREATE)])
        assert result.sequence == 2


async def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    """A database path in a directory that does not exist raises StorageError."""
    with pytest.raises(StorageError, match="directory"):
        async with SQLiteEventStore(tmp_path / "no" / "such" / "dir.db"):
            pass


async def test_database_from_the_future_is_refused(db_path: Path) -> None:
    """A file with a newer schema than this tasktrail knows is refused with advice."""
    async with SQLiteEventStore(db_path):
        pass
    with sqlite3.connect(db_path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(IncompatibleSchemaError, match="upgrade tasktrail") as info:
        async with SQLiteEventStore(db_path):
            pass
    assert (info.value.found, info.value.known) == (99, 2)
