"""Group commit for the SQLite store: ``BEGIN IMMEDIATE`` is the write lock, and the whole
write of a batch is one call on the store's writer thread.

The queue, the loop and the steps of a batch live in :mod:`tasktrail.store._commit`; this
module owns the writing connection (:class:`Writer`) and executes the steps' ops on it.
A batch costs one hop to the writer thread (not one per statement) and, with
``synchronous=FULL``, one fsync.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from tasktrail._crashpoints import crash_point
from tasktrail.errors import StoreClosedError
from tasktrail.projection import Task
from tasktrail.store._chain import GENESIS
from tasktrail.store._claim import QueuePosition
from tasktrail.store._commit import GroupCommitter, Outcome, Queued
from tasktrail.store._controls import READ_PAUSED, paused_sets
from tasktrail.store._ops import (
    Op,
    ReadActive,
    ReadClaimed,
    ReadKnownIds,
    ReadNextAt,
    ReadPaused,
    ReadQueue,
    ReadTail,
    ReadTasks,
    Write,
    drive,
)
from tasktrail.store._plan import TASK_COLUMNS, TASK_UPSERT, decode_task
from tasktrail.store._query import ACTIVE_COUNTS, Params, next_at_sql, queue_sql
from tasktrail.store._sqlite_errors import DriverError, translate

__all__ = [
    "SQLiteGroupCommitter",
    "UPSERT_TASK",
    "FileSignature",
    "Writer",
    "chunks",
    "marks",
    "signatures",
]

P = ParamSpec("P")
T = TypeVar("T")

INSERT_EVENT: Final = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
UPSERT_TASK: Final = (
    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    f"{TASK_UPSERT}"
)
_CHUNK: Final = 500  # ids per "IN (...)" query


def chunks(items: list[str]) -> Iterable[list[str]]:
    """``items`` in slices small enough for one ``IN (...)`` query."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def marks(count: int) -> str:
    """``count`` SQL placeholders."""
    return ",".join("?" * count)


class Writer:
    """The store's one writing connection, owned by a thread of its own.

    Every write is a function of the connection run there by :meth:`call`: a whole group
    commit is one call, so the event loop hands work over once per batch.
    """

    def __init__(self, path: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tasktrail-writer")
        self._conn: sqlite3.Connection | None = None
        self._files = (path, f"{path}-wal")
        self.signature: tuple[FileSignature, ...] = ()
        """The database files as this connection's last call left them: a change seen
        later that does not match was made by another connection."""
        self.calls = 0
        """Calls finished so far."""
        self.busy = False
        """A call is running (the files are changing under it)."""
        self.on_external: Callable[[], None] | None = None
        """Called (on the event loop) when a call finds the files changed since the last
        one: another connection wrote in between."""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Open the connection (on the writer thread, where it will be used)."""
        self._loop = loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)

    async def call(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(connection, *args, **kwargs)`` on the writer thread.

        A caller cancelled meanwhile stops waiting; the call itself runs to its end (the
        thread cannot be interrupted), and the next call runs after it.
        """
        conn = self._conn
        if conn is None:
            raise StoreClosedError()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._run, functools.partial(fn, conn, *args, **kwargs)
        )

    def _run(self, call: Callable[[], T]) -> T:
        self.busy = True
        try:
            before = signatures(self._files)
            if self.signature and before != self.signature and self.on_external is not None:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self.on_external)
            return call()
        finally:  # still on the writer thread: the files as this write left them
            self.signature = signatures(self._files)
            self.calls += 1
            self.busy = False

    def written_by_another(self, files: tuple[FileSignature, ...], *, calls: int) -> bool:
        """Whether ``files``, seen after ``calls`` calls had finished, were written by
        another connection. ``False`` when a call of this writer ran meanwhile: the files
        may have been caught mid-write, and the next call judges what it finds itself."""
        return not self.busy and self.calls == calls and files != self.signature

    async def close(self) -> None:
        """Close the connection once the calls already queued are done."""
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)


FileSignature = tuple[int, int, int] | None
"""(inode, size, mtime in ns) of a file, ``None`` when it does not exist."""


def signatures(paths: Iterable[str]) -> tuple[FileSignature, ...]:
    """The signature of each of ``paths``."""
    found: list[FileSignature] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            found.append(None)
        else:
            found.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def execute(conn: sqlite3.Connection, op: Op) -> Any:
    """Run one op of a batch's steps on the writing connection (inside its transaction)."""
    match op:
        case ReadTail():
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            return (row[0], row[1]) if row else (0, GENESIS)
        case ReadTasks(ids=ids):
            tasks: dict[str, Task] = {}
            for chunk in chunks(ids):
                rows = conn.execute(
                    f"SELECT id, record FROM tasks WHERE id IN ({marks(len(chunk))})", chunk
                ).fetchall()
                tasks.update((r[0], decode_task(r[1])) for r in rows)
            return tasks
        case ReadActive():
            return {str(k): int(n) for k, n in conn.execute(ACTIVE_COUNTS).fetchall()}
        case ReadKnownIds(ids=ids):
            known: dict[str, tuple[str, int, int]] = {}
            for chunk in chunks(ids):
                rows = conn.execute(
                    "SELECT event_id, stream_id, version, seq FROM events "
                    f"WHERE event_id IN ({marks(len(chunk))})",
                    chunk,
                ).fetchall()
                known.update((r[0], (r[1], r[2], r[3])) for r in rows)
            return known
        case ReadQueue(page=page):
            p = Params(numbered=False)
            sql = queue_sql(page, p, order="rowid")
            found: list[tuple[QueuePosition, Task]] = [
                ((r[0], r[1], r[2]), decode_task(r[3]))
                for r in conn.execute(sql, p.values).fetchall()
            ]
            return found
        case ReadNextAt(now=now, agents=agents, task_ids=task_ids):
            p = Params(numbered=False)
            sql = next_at_sql(p, now=now, agents=agents, task_ids=task_ids)
            row = conn.execute(sql, p.values).fetchone()
            return None if row is None or row[0] is None else float(row[0])
        case ReadPaused():
            return paused_sets(conn.execute(READ_PAUSED).fetchall())
        case ReadClaimed(low=low, high=high):
            rows = conn.execute(
                "SELECT DISTINCT stream_id FROM events WHERE event_id >= ? AND event_id < ?",
                (low, high),
            ).fetchall()
            return [row[0] for row in rows]
        case Write(events=events, tasks=task_rows):
            conn.executemany(INSERT_EVENT, events)
            crash_point("commit.after_insert")
            conn.executemany(UPSERT_TASK, task_rows)
            return None
    raise AssertionError(f"unknown op {op!r}")  # pragma: no cover


class SQLiteGroupCommitter(GroupCommitter):
    """Owns the writer connection's appends and claims."""

    def __init__(
        self,
        writer: Writer,
        *,
        path: str,
        lock: asyncio.Lock,
        clock: Callable[[], float],
        max_batch_events: int,
        max_event_bytes: int,
    ) -> None:
        self._writer = writer
        self._path = path
        super().__init__(
            name=path,
            lock=lock,
            clock=clock,
            max_batch_events=max_batch_events,
            max_event_bytes=max_event_bytes,
        )

    async def _write_batch(
        self, batch: list[Queued]
    ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
        return await self._writer.call(self._write_sync, batch)

    def _write_sync(
        self, conn: sqlite3.Connection, batch: list[Queued]
    ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
        """The fast path trusts that event ids are fresh and lets the UNIQUE index catch a
        retried append; on that (rare) IntegrityError the batch is planned again, this
        time looking up every event id, so the retry is answered as a duplicate.
        """
        try:
            try:
                return self._transaction(conn, batch, careful=False)
            except sqlite3.IntegrityError:
                return self._transaction(conn, batch, careful=True)
        except DriverError as err:
            raise translate(err, self._path) from err

    def _transaction(
        self, conn: sqlite3.Connection, batch: list[Queued], *, careful: bool
    ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
        crash_point("commit.before_begin")
        conn.execute("BEGIN IMMEDIATE")
        try:
            crash_point("commit.after_begin")
            done: tuple[list[Outcome], dict[str, Task | None], int | None] = drive(
                self._steps(batch, careful=careful), functools.partial(execute, conn)
            )
            crash_point("commit.before_commit")
            conn.execute("COMMIT")
            crash_point("commit.after_commit")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return done
