"""The SQLite event store, with group commit.

Two connections: a writer, owned by a thread of its own and used only for writes, and a
reader (aiosqlite) for queries. WAL lets readers run beside the writer and never see an
uncommitted batch.

Group commit: ``append`` validates and encodes its events in the caller's task, queues them
and waits. The commit loop takes everything queued and, in one call on the writer thread,
opens ``BEGIN IMMEDIATE``, reads the log's tail and the current rows of the streams
involved, plans each append (:func:`~._plan.plan_batch`), chooses the claims of the
workers that asked (:mod:`._claim`), writes the events and projection rows, and commits
(``synchronous=FULL`` by default: on disk). Only then is each caller answered. Appends that
arrive during a commit form the next batch, so many concurrent callers share one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from tasktrail.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    StorageError,
    StoreClosedError,
)
from tasktrail.events import Upcaster
from tasktrail.projection import Task
from tasktrail.store._backend import Backend
from tasktrail.store._controls import Control, write_control_sqlite
from tasktrail.store._plan import TASK_COLUMNS, TaskRow, task_row
from tasktrail.store._scan import fold_events, fold_rows, fold_tasks
from tasktrail.store._sqlite_commit import UPSERT_TASK, SQLiteGroupCommitter, Writer, signatures
from tasktrail.store._sqlite_errors import DriverError, permission_problem, translate, translating
from tasktrail.store._sqlite_open import connect, init_schema, open_connection
from tasktrail.store._sqlite_scan import EVENT_COLUMNS, fetch_all, scan, verify_chain
from tasktrail.store.base import VerifyReport

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteEventStore"]

_REBUILD_CHUNK: Final = 2_000
"""Task rows per write of ``rebuild()``."""
CHANGE_POLL: Final = 0.025
"""Seconds between looks at the database files for commits made by other processes."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    conn.execute(sql, params)


class SQLiteEventStore(Backend[SQLiteGroupCommitter]):
    """The event log and task projection in one SQLite file.

    Open it with ``async with SQLiteEventStore(path) as store:``. Several stores, in one
    process or many, may share a file.

    Args:
        path: the database file; created (with its schema) if it does not exist.
        synchronous: SQLite's ``synchronous`` pragma. ``"FULL"`` (default) means an append
            returns only once its commit is on disk.
        busy_timeout: seconds to wait for another connection's lock before failing with
            :class:`~tasktrail.StorageBusyError`.
        max_event_bytes: the largest encoded payload accepted for one event.
        max_batch_events: the most events written by one group commit.
        clock: returns the time as unix seconds; injectable for tests.
        upcasters: extra upcasters, keyed by (event tag, schema version they read).
    """

    _NUMBERED = False
    _ORDER = "rowid"
    _VERSION_TOP = 2**62
    _IDS_PER_QUERY = 500
    _EVENT_COLUMNS = EVENT_COLUMNS
    _STREAM_SIZES = (  # (row by row, whole window): see tasktrail.store._stream
        "SELECT version, length(CAST(data AS BLOB)) FROM events WHERE stream_id = ? "
        "AND version > ? AND version <= ? ORDER BY version LIMIT ?",
        "SELECT count(*), max(k), sum(n) FROM (SELECT version AS k, "
        "length(CAST(data AS BLOB)) AS n FROM events WHERE stream_id = ? AND version > ? "
        "AND version <= ? ORDER BY version LIMIT ?) AS w",
    )
    _STREAM_ROWS = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ? "
        "AND version <= ? ORDER BY version"
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 10.0,
        max_event_bytes: int = 1 << 20,
        max_batch_events: int = 5000,
        clock: Callable[[], float] = time.time,
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidInputError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.path = os.fspath(path)
        self._abspath = os.path.abspath(self.path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.max_event_bytes = max_event_bytes
        self.max_batch_events = max_batch_events
        self._init_backend(clock=clock, upcasters=upcasters)
        self._writer = Writer(self._abspath)
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    # -- opening and closing -------------------------------------------------------------

    async def open(self) -> Self:
        """Open the connections, create or migrate the schema, start the commit loop."""
        if self._closing:
            raise StoreClosedError()
        if self._opened:
            return self
        directory = os.path.dirname(self._abspath)
        if not await asyncio.to_thread(os.path.isdir, directory):
            denied = await asyncio.to_thread(permission_problem, self.path)
            missing = f"the directory {directory} does not exist"
            raise StorageError(denied[0] if denied else f"cannot open {self.path}: {missing}")
        try:
            with translating(self.path):
                await self._writer.open(
                    lambda: open_connection(
                        self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous
                    )
                )
                await self._writer.call(init_schema, self.path, busy_timeout=self.busy_timeout)
                self._reader = await connect(
                    self.path, busy_timeout=self.busy_timeout, synchronous=self.synchronous
                )
                await self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await self._writer.close()
            if self._reader is not None:
                await self._reader.close()
            self._reader = None
            raise
        self._committer = SQLiteGroupCommitter(
            self._writer,
            path=self.path,
            lock=self._write_lock,
            clock=self._clock,
            max_batch_events=self.max_batch_events,
            max_event_bytes=self.max_event_bytes,
        )
        self._writer.on_external = self._committer.signal_external
        self._opened = True
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch_files(), name=f"tasktrail-watch:{self.path}"
        )
        return self

    async def close(self) -> None:
        """Finish the queued appends, then close. Closing twice is harmless."""
        if self._closing:
            return
        self._closing = True
        try:
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
            if self._committer is not None:
                await self._committer.close()
        finally:
            await self._writer.close()
            if self._reader is not None:
                await self._reader.close()
            self._reader = None

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_opened", False) and not self._closing:  # __init__ may have failed
            _warn(f"SQLiteEventStore({self.path!r}) was never closed", ResourceWarning, source=self)

    async def _watch_files(self) -> None:
        """Follow the database files: a change made by another process wakes the callers of
        :meth:`wait_for_change` (within :data:`CHANGE_POLL`), and a ``-wal`` file deleted
        under the open connections (it holds the latest commits) stops the store.

        A change is this store's own when the files are as its writer's last call left
        them; anything else was written by another connection."""
        assert self._committer is not None
        wal = f"{self._abspath}-wal"
        files = (self._abspath, wal)
        seen = signatures(files)
        inode = seen[1][0] if seen[1] is not None else None
        while True:
            await asyncio.sleep(CHANGE_POLL)
            calls = self._writer.calls
            now = signatures(files)
            if now == seen:
                continue
            seen = now
            if inode is None and now[1] is not None:
                inode = now[1][0]
            elif inode is not None and (now[1] is None or now[1][0] != inode):
                self._broken = CorruptDatabaseError(
                    f"the write-ahead log {wal} was deleted or replaced while the database "
                    "was open; the commits it held since the last checkpoint may be lost. "
                    "Stop every process using the database, then run verify"
                )
                self._committer.signal_external()
                return
            if self._writer.written_by_another(now, calls=calls):
                self._committer.signal_external()

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when events are committed, or after ``timeout`` seconds.

        This store's own commits wake the caller at once; another process's within
        :data:`CHANGE_POLL` seconds, when the database files change.
        """
        await self._check_open().wait_for_commit(timeout)

    async def wait_for_change(self, timeout: float) -> bool:
        """Return True when another process may have committed events (the database files
        are not as this store's last write left them), False after ``timeout`` seconds."""
        return await self._check_open().wait_for_external(timeout)

    # -- reading ---------------------------------------------------------------------------

    def _read_db(self) -> aiosqlite.Connection:
        self._check_open()
        assert self._reader is not None
        return self._reader

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        db = self._read_db()
        with translating(self.path):
            return await fetch_all(db, sql, params)

    # -- checking and rebuilding -----------------------------------------------------------

    async def verify(self) -> VerifyReport:
        """Recompute the hash chain over the whole log.

        Returns a :class:`VerifyReport`; raises TamperedLogError naming the first sequence
        number whose stored hash, position or content does not match.
        """
        db = self._read_db()
        with translating(self.path):
            return await verify_chain(db, self.path)

    async def rebuild(self) -> int:
        """Drop the task projection and replay it from the log; returns the task count.

        The log is folded from one read snapshot, beside the writers; only the swap takes
        the write lock: the events appended meanwhile are folded on top, and the table is
        emptied and refilled in one short transaction. Appends wait for that swap (within
        their busy timeout), never for the whole fold.
        """
        db = self._read_db()
        with translating(self.path):
            await db.execute("BEGIN")  # one snapshot for the whole fold
            try:
                tasks, last = await fold_tasks(scan(db), self._event)
            finally:
                await db.execute("COMMIT")
        self._check_open()
        async with self._write_lock:
            if self._committer is not None:
                self._committer.forget()
            return await self._writer.call(self._swap_projection, tasks, last)

    def _swap_projection(
        self, conn: sqlite3.Connection, tasks: dict[str, Task], last: dict[str, int]
    ) -> int:
        """On the writer thread: fold the events after the snapshot, rewrite the table."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                after = max(last.values(), default=0)
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (after,)
                ).fetchall()
                fold_events(tasks, last, rows, self._event)
                conn.execute("DELETE FROM tasks")
                ids = list(tasks)
                for start in range(0, len(ids), _REBUILD_CHUNK):
                    chunk = ids[start : start + _REBUILD_CHUNK]
                    conn.executemany(UPSERT_TASK, [task_row(tasks[i], last[i]) for i in chunk])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except DriverError as err:
            raise translate(err, self.path) from err
        return len(tasks)

    async def _fold_and_live(self) -> tuple[dict[str, TaskRow], dict[str, Any]]:
        db = self._read_db()
        with translating(self.path):
            await db.execute("BEGIN")  # one snapshot for both reads
            try:
                expected = await fold_rows(scan(db), self._event)
                rows = await fetch_all(db, f"SELECT {TASK_COLUMNS} FROM tasks")
            finally:
                await db.execute("COMMIT")
        return expected, {row[0]: tuple(row) for row in rows}

    async def _write_control(
        self, action: str, kind: str, target: str, actor: str, reason: str | None
    ) -> Control | None:
        committer = self._check_open()
        async with self._write_lock:
            with translating(self.path):
                result: Control | None = await self._writer.call(
                    write_control_sqlite, action=action, kind=kind, target=target,
                    actor=actor, reason=reason, now=self._clock(),
                )  # fmt: skip
        committer.signal_commit()  # a worker waiting for a change looks again
        return result

    # -- the operational tables ----------------------------------------------------------

    async def _write_row(self, sql: str, params: Sequence[Any]) -> None:
        self._check_open()
        async with self._write_lock:
            with translating(self.path):
                await self._writer.call(_execute, sql, params)
