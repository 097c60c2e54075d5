"""Group commit for the SQLite store: ``BEGIN IMMEDIATE`` is the write lock.

The queue, the loop and the planning live in :mod:`tasktrail.store._commit`; this module
supplies the SQLite reads and writes (one fsync per batch with ``synchronous=FULL``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from typing import Final

import aiosqlite

from tasktrail._crashpoints import crash_point
from tasktrail.projection import Task
from tasktrail.store import _commit
from tasktrail.store._chain import GENESIS
from tasktrail.store._commit import Queued
from tasktrail.store._plan import BatchPlan
from tasktrail.store._shared import decode_task
from tasktrail.store._sqlite_errors import DriverError, translate

__all__ = ["ACTIVE_COUNTS", "GroupCommitter", "UPSERT_TASK", "chunks", "decode_task", "marks"]

INSERT_EVENT: Final = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
UPSERT_TASK: Final = (
    "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "state = excluded.state, version = excluded.version, last_seq = excluded.last_seq, "
    "updated_at = excluded.updated_at, record = excluded.record"
)
ACTIVE_COUNTS: Final = (
    "SELECT coalesce(concurrency_key, agent), count(*) FROM tasks "
    "WHERE state IN ('starting', 'running') GROUP BY 1"
)
"""Tasks holding a slot (starting/running) per limit key (concurrency key, else agent)."""
_CHUNK: Final = 500  # ids per "IN (...)" query


def chunks(items: list[str]) -> Iterable[list[str]]:
    """``items`` in slices small enough for one ``IN (...)`` query."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def marks(count: int) -> str:
    """``count`` SQL placeholders."""
    return ",".join("?" * count)


class GroupCommitter(_commit.GroupCommitter):
    """Owns the writer connection's appends."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        path: str,
        lock: asyncio.Lock,
        clock: Callable[[], float],
        max_batch_events: int,
    ) -> None:
        self._db = db
        self._path = path
        super().__init__(name=path, lock=lock, clock=clock, max_batch_events=max_batch_events)

    async def _write_batch(self, batch: list[Queued]) -> tuple[BatchPlan, dict[str, Task | None]]:
        """The fast path trusts that event ids are fresh and lets the UNIQUE index catch a
        retried append; on that (rare) IntegrityError the batch is planned again, this
        time looking up every event id, so the retry is answered as a duplicate.
        """
        try:
            try:
                return await self._write(batch, careful=False)
            except sqlite3.IntegrityError:
                return await self._write(batch, careful=True)
        except DriverError as err:
            raise translate(err, self._path) from err

    async def _write(
        self, batch: list[Queued], *, careful: bool
    ) -> tuple[BatchPlan, dict[str, Task | None]]:
        db = self._db
        assert db is not None
        crash_point("commit.before_begin")
        await db.execute("BEGIN IMMEDIATE")
        try:
            crash_point("commit.after_begin")
            plan, tasks = await self._plan(db, batch, careful=careful)
            if plan.event_rows:
                await db.executemany(INSERT_EVENT, plan.event_rows)
                crash_point("commit.after_insert")
                await db.executemany(UPSERT_TASK, plan.task_rows.values())
            crash_point("commit.before_commit")
            await db.execute("COMMIT")
            crash_point("commit.after_commit")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return plan, tasks

    async def _tail(self, db: aiosqlite.Connection) -> tuple[int, str]:
        tail = list(
            await db.execute_fetchall("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        )
        return (tail[0][0], tail[0][1]) if tail else (0, GENESIS)

    async def _task_rows(self, db: aiosqlite.Connection, task_ids: list[str]) -> dict[str, Task]:
        tasks: dict[str, Task] = {}
        for chunk in chunks(task_ids):
            rows = await db.execute_fetchall(
                f"SELECT id, record FROM tasks WHERE id IN ({marks(len(chunk))})", chunk
            )
            tasks.update((r[0], decode_task(r[1])) for r in rows)
        return tasks

    async def _active_counts(self, db: aiosqlite.Connection) -> dict[str, int]:
        rows = await db.execute_fetchall(ACTIVE_COUNTS)
        return {str(key): int(count) for key, count in rows}

    async def _known_ids(
        self, db: aiosqlite.Connection, event_ids: list[str]
    ) -> dict[str, tuple[str, int, int]]:
        known: dict[str, tuple[str, int, int]] = {}
        for chunk in chunks(event_ids):
            rows = await db.execute_fetchall(
                f"SELECT event_id, stream_id, version, seq FROM events "
                f"WHERE event_id IN ({marks(len(chunk))})",
                chunk,
            )
            known.update((r[0], (r[1], r[2], r[3])) for r in rows)
        return known
