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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Self

import msgspec

from tasktrail.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    StorageError,
    StoreClosedError,
    TaskNotFoundError,
)
from tasktrail.events import BUILTIN_UPCASTERS, NewEvent, RecordedEvent, Upcaster, decode_payload
from tasktrail.ids import check_task_id
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.store._claim import ClaimRequest, ClaimResult
from tasktrail.store._commit import CommitStatistics, LatencyHistogram
from tasktrail.store._controls import (
    CONTROL_COLUMNS,
    LIST_PAUSES,
    Control,
    check_control,
    control,
    write_control_sqlite,
)
from tasktrail.store._plan import AppendResult, PendingAppend, task_row
from tasktrail.store._query import (
    TASK_COUNTS,
    Params,
    TaskFilter,
    count_rows,
    count_sql,
    cursor_sql,
    finished_sql,
    list_sql,
    resolve_cursor,
)
from tasktrail.store._scan import fold_tasks
from tasktrail.store._shared import (
    check_state_at,
    check_versions,
    prepare_append,
    replay_chunks,
)
from tasktrail.store._sqlite_commit import (
    ACTIVE_COUNTS,
    UPSERT_TASK,
    GroupCommitter,
    Writer,
    chunks,
    decode_task,
    marks,
    signatures,
)
from tasktrail.store._sqlite_errors import DriverError, permission_problem, translate, translating
from tasktrail.store._sqlite_open import connect, init_schema, open_connection
from tasktrail.store._sqlite_scan import EVENT_COLUMNS, fetch_all, fold_log, scan, verify_chain
from tasktrail.store._stream import (
    DEFAULT_CHUNK_BYTES,
    STREAM_MAX_ROWS,
    bounded_chunks,
    check_chunk_bytes,
)
from tasktrail.store._workers import WORKER_COLUMNS, WorkerInfo, worker_info
from tasktrail.store.base import VerifyReport
from tasktrail.store.subscription import Subscription

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteEventStore"]

_STREAM_SIZES: Final = (  # (row by row, whole window): see tasktrail.store._stream
    "SELECT version, length(CAST(data AS BLOB)) FROM events WHERE stream_id = ? AND version > ? "
    "AND version <= ? ORDER BY version LIMIT ?",
    "SELECT count(*), max(k), sum(n) FROM (SELECT version AS k, length(CAST(data AS BLOB)) AS n "
    "FROM events WHERE stream_id = ? AND version > ? AND version <= ? ORDER BY version "
    "LIMIT ?) AS w",
)
_STREAM_ROWS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ? AND version <= ? "
    "ORDER BY version"
)
_REBUILD_CHUNK: Final = 2_000
"""Task rows per write of ``rebuild()``."""
CHANGE_POLL: Final = 0.025
"""Seconds between looks at the database files for commits made by other processes."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    conn.execute(sql, params)


class SQLiteEventStore:
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
        self._clock = clock
        self._upcasters = {**BUILTIN_UPCASTERS, **(upcasters or {})}
        self._writer = Writer(self._abspath)
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._committer: GroupCommitter | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._broken: StorageError | None = None
        self._closing = False
        self._opened = False

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
        self._committer = GroupCommitter(
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

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_opened", False) and not self._closing:  # __init__ may have failed
            _warn(f"SQLiteEventStore({self.path!r}) was never closed", ResourceWarning, source=self)

    def _check_open(self) -> None:
        if not self._opened or self._closing:
            raise StoreClosedError()
        if self._broken is not None:
            raise self._broken

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

    # -- appending -----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        limit: int | None = None,
        fence: tuple[str, int] | None = None,
    ) -> AppendResult:
        """Append ``events`` to the task ``stream_id``, atomically; return after commit.

        ``expected_version`` is the stream's version the caller based its decision on
        (0: the task must not exist yet); ``None`` skips that check. Every event is
        checked against the lifecycle. Appending the same :class:`NewEvent` objects again
        returns the stored result with ``duplicate=True`` and writes nothing. With
        ``limit``, an append that starts the task (pending to starting/running) is refused
        with ConcurrencyLimitError when ``limit`` tasks of its limit key (concurrency key,
        else agent) are already starting or running, checked under the write lock. With
        ``fence=(worker_id, attempt)`` the append is an attempt's: refused with
        AttemptSupersededError unless that attempt still holds the task.

        Raises VersionConflictError, IllegalTransitionError, TaskExistsError,
        TaskNotFoundError, EventIdConflictError, InvalidInputError or StorageError; in
        every case nothing of this append was written.
        """
        self._check_open()
        assert self._committer is not None
        request = self._prepare(stream_id, events, expected_version)
        request.limit = limit
        request.fence = fence
        result: AppendResult = await self._committer.submit(request)
        return result

    async def claim(self, request: ClaimRequest) -> ClaimResult:
        """Claim startable tasks for a worker in the next group commit, under the write
        lock (see :mod:`tasktrail.store._claim`); returns them as the claims left them."""
        self._check_open()
        assert self._committer is not None
        result: ClaimResult = await self._committer.submit(request)
        return result

    def _prepare(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None
    ) -> PendingAppend:
        return prepare_append(
            stream_id, events, expected_version, max_event_bytes=self.max_event_bytes
        )

    def commit_statistics(self) -> CommitStatistics:
        """How long this store object's commits took so far (a histogram of seconds)."""
        committer = self._committer
        if committer is None:
            return LatencyHistogram().snapshot()
        return committer.latency.snapshot()

    async def drain(self) -> None:
        """Return once every append already queued is committed (or failed)."""
        self._check_open()
        assert self._committer is not None
        await self._committer.drain()

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when events are committed, or after ``timeout`` seconds.

        This store's own commits wake the caller at once; another process's within
        :data:`CHANGE_POLL` seconds, when the database files change.
        """
        self._check_open()
        assert self._committer is not None
        await self._committer.wait_for_commit(timeout)

    async def wait_for_change(self, timeout: float) -> bool:
        """Return True when another process may have committed events (the database files
        are not as this store's last write left them), False after ``timeout`` seconds."""
        self._check_open()
        assert self._committer is not None
        return await self._committer.wait_for_external(timeout)

    # -- reading ---------------------------------------------------------------------------

    def _read_db(self) -> aiosqlite.Connection:
        self._check_open()
        assert self._reader is not None
        return self._reader

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> Iterable[sqlite3.Row]:
        db = self._read_db()
        with translating(self.path):
            return await fetch_all(db, sql, params)

    def _event(self, row: Sequence[Any]) -> RecordedEvent:
        payload = decode_payload(
            row[4], row[5], row[10], sequence=row[0], upcasters=self._upcasters
        )
        return RecordedEvent(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
            payload, row[11],
        )  # fmt: skip

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one task with ``after_version < version <= to_version``."""
        check_task_id(stream_id)
        rows = await self._query(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ? "
            "AND version <= ? ORDER BY version",
            (stream_id, after_version, to_version if to_version is not None else 2**62),
        )
        return [self._event(row) for row in rows]

    def iter_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """The events of one task with ``after_version < version <= to_version``, in order,
        in non-empty chunks of about ``chunk_bytes`` of payload (a bigger event comes
        alone), so memory does not grow with the task's output. Nothing for an unknown
        task. Each chunk is read by short queries: no snapshot is held between chunks.
        """
        check_task_id(stream_id)
        after, last = check_versions(after_version, to_version, top=2**62)
        return self._iter_stream(stream_id, after, last, check_chunk_bytes(chunk_bytes))

    async def _iter_stream(
        self, stream_id: str, after: int, last: int, budget: int
    ) -> AsyncIterator[list[RecordedEvent]]:
        async def probe(after: int, n: int, each: bool) -> list[Any]:
            return list(await self._query(_STREAM_SIZES[not each], (stream_id, after, last, n)))

        async def fetch(after: int, upto: int) -> list[RecordedEvent]:
            rows = await self._query(_STREAM_ROWS, (stream_id, after, upto))
            return [self._event(row) for row in rows]

        async for events in bounded_chunks(
            probe, fetch, after=after, budget=budget, max_rows=STREAM_MAX_ROWS
        ):
            yield events

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of the whole log with a sequence number above ``after``."""
        rows = await self._query(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [self._event(row) for row in rows]

    async def head(self) -> int:
        """The sequence number of the last committed event (0 for an empty log)."""
        rows = list(await self._query("SELECT max(seq) FROM events"))
        return int(rows[0][0] or 0)

    async def get_task(self, task_id: str) -> Task | None:
        """The current state of a task, or ``None`` if there is no such task."""
        check_task_id(task_id)
        rows = list(await self._query("SELECT record FROM tasks WHERE id = ?", (task_id,)))
        return decode_task(rows[0][0]) if rows else None

    async def list_tasks(
        self,
        *,
        state: TaskState | str | Iterable[TaskState | str] | None = None,
        agent: str | Iterable[str] | None = None,
        parent_id: str | None = None,
        rerun_of: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        worker_id: str | None = None,
        id_prefix: str | None = None,
        finished_since: datetime | float | None = None,
        only_finished_since: datetime | float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        sort: str = "created",
        after_id: str | None = None,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first (``newest_first``: newest first).

        ``state`` and ``agent`` may each be one value or several; ``since`` (inclusive)
        and ``until`` (exclusive) bound the creation time (aware datetimes or unix seconds);
        ``finished_since`` leaves out the tasks that finished before it (retention);
        ``worker_id`` is the worker that holds or last held the task; ``id_prefix`` keeps
        the ids that start with it; ``only_finished_since`` keeps only the tasks finished
        at or after then.

        Paging: ``sort`` is ``"created"`` (creation time) or ``"updated"`` (the last
        change); ``after_id`` continues after that task in this order (a keyset position:
        the page after the thousandth costs what the first does; TaskNotFoundError if
        there is no such task); ``offset`` skips that many more.
        """
        filters: TaskFilter = {
            "state": state, "agent": agent, "parent_id": parent_id, "rerun_of": rerun_of,
            "since": since, "until": until, "worker_id": worker_id, "id_prefix": id_prefix,
            "finished_since": finished_since, "only_finished_since": only_finished_since,
        }  # fmt: skip
        after = None
        if after_id is not None:
            p = Params(numbered=False)
            sql = cursor_sql(p, task_id=check_task_id(after_id), sort=sort, order="rowid")
            rows = list(await self._query(sql, p.values))
            after = resolve_cursor(after_id, rows[0] if rows else None)
        p = Params(numbered=False)
        sql = list_sql(
            p, filters, order="rowid", sort=sort, newest_first=newest_first, after=after,
            offset=offset, limit=limit,
        )  # fmt: skip
        return [decode_task(row[0]) for row in await self._query(sql, p.values)]

    async def count_tasks(
        self,
        *,
        limit: int | None = None,
        sort: str = "created",
        newest_first: bool = False,
        after_id: str | None = None,
        **filters: Any,
    ) -> int:
        """How many tasks match the filters of :meth:`list_tasks` (after ``after_id`` in
        its order, if given), counting at most ``limit``: a bounded count reads at most
        that many index entries."""
        after = None
        if after_id is not None:
            p = Params(numbered=False)
            sql = cursor_sql(p, task_id=check_task_id(after_id), sort=sort, order="rowid")
            rows = list(await self._query(sql, p.values))
            after = resolve_cursor(after_id, rows[0] if rows else None)
        p = Params(numbered=False)
        sql = count_sql(
            p, filters, order="rowid", limit=limit, sort=sort, newest_first=newest_first,
            after=after,
        )  # fmt: skip
        rows = list(await self._query(sql, p.values))
        return int(rows[0][0])

    async def task_counts(self) -> dict[str, dict[str, int]]:
        """How many tasks each agent has in each state (states without tasks left out),
        read from the ``tasks_by_agent`` index alone."""
        return count_rows(await self._query(TASK_COUNTS))

    async def get_tasks(self, task_ids: Iterable[str]) -> list[Task]:
        """The current state of each task that exists among ``task_ids``."""
        ids = [check_task_id(task_id) for task_id in task_ids]
        tasks: list[Task] = []
        for chunk in chunks(ids):
            rows = await self._query(
                f"SELECT record FROM tasks WHERE id IN ({marks(len(chunk))})", chunk
            )
            tasks.extend(decode_task(row[0]) for row in rows)
        return tasks

    async def queued_tasks(
        self,
        *,
        limit: int,
        agents: Iterable[str] | None = None,
        created_before: float | None = None,
    ) -> list[Task]:
        """Pending tasks in start order: highest priority first, then first in, first out.

        Only tasks of ``agents`` if given, and created at or before ``created_before`` if given.
        """
        p = Params(numbered=False)
        sql = "SELECT record FROM tasks WHERE state = 'pending'"
        if agents is not None:
            sql += " AND " + p.one_of("agent", agents)
        if created_before is not None:
            sql += f" AND created_at <= {p.add(created_before)}"
        sql += f" ORDER BY priority DESC, created_at, rowid LIMIT {p.add(limit)}"
        return [decode_task(row[0]) for row in await self._query(sql, p.values)]

    async def expired_tasks(
        self, *, now: float, limit: int, agents: Iterable[str] | None = None
    ) -> list[Task]:
        """Pending tasks (of ``agents``, if given) past their TTL or queue timeout at ``now``."""
        p = Params(numbered=False)
        sql = f"SELECT record FROM tasks WHERE state = 'pending' AND expires_at <= {p.add(now)}"
        if agents is not None:
            sql += " AND " + p.one_of("agent", agents)
        sql += f" ORDER BY expires_at LIMIT {p.add(limit)}"
        return [decode_task(row[0]) for row in await self._query(sql, p.values)]

    async def finished_after(
        self, after: int, *, limit: int = 10_000, with_parent: bool = False
    ) -> tuple[list[tuple[str, Task]], int]:
        """The tasks that finished after sequence number ``after``: ``([(event id of the
        final event, task)], position)`` over the next ``limit`` sequence numbers at most,
        where ``position`` is the last one looked at (the next call's ``after``). With
        ``with_parent``, only tasks that have a parent. The tasks are read with their final
        events, in one query, without decoding the log."""
        head = await self.head()
        upto = min(head, after + limit)
        if upto <= after:
            return [], after
        p = Params(numbered=False)
        rows = await self._query(
            finished_sql(p, after=after, upto=upto, with_parent=with_parent), p.values
        )
        return [(row[1], decode_task(row[2])) for row in rows], upto

    async def active_counts(self) -> dict[str, int]:
        """Tasks in ``starting``/``running`` per limit key (concurrency key, else agent)."""
        rows = await self._query(ACTIVE_COUNTS)
        return {str(key): int(count) for key, count in rows}

    async def history(self, task_id: str) -> list[RecordedEvent]:
        """Every event of a task, in order. Raises TaskNotFoundError for an unknown id."""
        events = await self.read_stream(task_id)
        if not events:
            raise TaskNotFoundError(task_id)
        return events

    async def state_at(
        self, task_id: str, *, version: int | None = None, at: datetime | float | None = None
    ) -> Task | None:
        """The task as it was at ``version``, or at time ``at`` (the latest if neither).

        ``at`` (an aware datetime, or unix seconds) selects the events up to the first one
        recorded after it, so a clock that stepped back never yields a state that did not
        exist. Returns ``None`` when the task did not exist yet at ``at``; raises
        TaskNotFoundError when it never existed.
        """
        check_state_at(version, at)
        return await replay_chunks(
            task_id, self.iter_stream(task_id, to_version=version), version=version, at=at
        )

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
                for row in rows:
                    event = self._event(row)
                    tasks[event.stream_id] = fold(tasks.get(event.stream_id), event)
                    last[event.stream_id] = event.sequence
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

    async def check_projection(self) -> list[str]:
        """Ids of tasks whose projection row differs from a fold of the log (sorted)."""
        db = self._read_db()
        with translating(self.path):
            await db.execute("BEGIN")  # one snapshot for both reads
            try:
                expected = await fold_log(db, self._event)
                live = {row[0]: tuple(row) for row in await fetch_all(db, "SELECT * FROM tasks")}
            finally:
                await db.execute("COMMIT")
        return sorted(
            task_id
            for task_id in expected.keys() | live.keys()
            if expected.get(task_id) != live.get(task_id)
        )

    # -- pauses ------------------------------------------------------------------------------

    async def pause(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control:
        """Pause an agent (``kind="agent"``) or a concurrency key (``kind="key"``): from
        the moment this returns, no worker claims a task of it; running tasks go on.

        Recorded in the append-only control log with ``actor`` and ``reason``. Pausing
        what is already paused records nothing and returns the pause in force.
        """
        result = await self._control("pause", kind, target, actor, reason)
        assert result is not None
        return result

    async def resume(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control | None:
        """Resume what :meth:`pause` paused; returns the resume recorded, or ``None`` (and
        records nothing) when it was not paused."""
        return await self._control("resume", kind, target, actor, reason)

    async def _control(
        self, action: str, kind: str, target: str, actor: str, reason: str | None
    ) -> Control | None:
        kind, target, actor = check_control(kind, target, actor)
        self._check_open()
        async with self._write_lock:
            with translating(self.path):
                result: Control | None = await self._writer.call(
                    write_control_sqlite, action=action, kind=kind, target=target,
                    actor=actor, reason=reason, now=self._clock(),
                )  # fmt: skip
        if self._committer is not None:
            self._committer.signal_commit()  # a worker waiting for a change looks again
        return result

    async def list_pauses(self) -> list[Control]:
        """The pauses in force (the control that made each), oldest first."""
        return [control(row) for row in await self._query(LIST_PAUSES)]

    async def controls(self, *, after: int = 0, limit: int = 1000) -> list[Control]:
        """Up to ``limit`` rows of the control log (every pause and resume) after ``after``."""
        rows = await self._query(
            f"SELECT {CONTROL_COLUMNS} FROM controls WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [control(row) for row in rows]

    # -- workers -------------------------------------------------------------------------------

    async def _write_row(self, sql: str, params: Sequence[Any]) -> None:
        self._check_open()
        async with self._write_lock:
            with translating(self.path):
                await self._writer.call(_execute, sql, params)

    async def register_worker(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        agents: Iterable[str] | None = None,
        pid_namespace: str | None = None,
        boot_id: str | None = None,
    ) -> None:
        """Record a worker as alive now (insert, or revive a reused id), with the agents it
        runs and the pid namespace and boot its pid belongs to (``None``: unknown)."""
        now = self._clock()
        served = None if agents is None else msgspec.json.encode(sorted(agents)).decode()
        await self._write_row(
            f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?) "
            "ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "stopped_at = NULL, agents = excluded.agents, "
            "pid_namespace = excluded.pid_namespace, boot_id = excluded.boot_id",
            (worker_id, host, pid, now, now, served, pid_namespace, boot_id),
        )

    async def heartbeat(self, worker_id: str) -> None:
        """Extend a worker's lease."""
        await self._write_row(
            "UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (self._clock(), worker_id)
        )

    async def stop_worker(self, worker_id: str) -> None:
        """Record a clean shutdown: the worker's tasks may be recovered at once."""
        await self._write_row(
            "UPDATE workers SET stopped_at = ? WHERE worker_id = ?", (self._clock(), worker_id)
        )

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker ever registered in this database."""
        rows = await self._query(f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at")
        return [worker_info(row) for row in rows]

    async def was_delivered(self, subscriber: str, event_id: str) -> bool:
        """Whether ``subscriber`` already handed ``event_id`` to its callback."""
        rows = await self._query(
            "SELECT 1 FROM deliveries WHERE subscriber = ? AND event_id = ?", (subscriber, event_id)
        )
        return bool(list(rows))

    async def mark_delivered(self, subscriber: str, event_id: str) -> None:
        """Record that ``subscriber`` handed ``event_id`` to its callback."""
        await self._write_row(
            "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?)",
            (subscriber, event_id, self._clock()),
        )

    # -- subscribers -------------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> int:
        """The saved position of subscriber ``name`` (0 if it never saved one)."""
        rows = list(await self._query("SELECT position FROM checkpoints WHERE name = ?", (name,)))
        return int(rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Durably record that subscriber ``name`` has handled every event up to ``position``."""
        await self._write_row(
            "INSERT INTO checkpoints VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
            "SET position = excluded.position, updated_at = excluded.updated_at",
            (name, position, self._clock()),
        )

    def subscribe(
        self, name: str, *, batch_size: int = 500, poll_interval: float = 0.5
    ) -> Subscription:
        """A :class:`Subscription` that follows the log from subscriber ``name``'s checkpoint."""
        return Subscription(self, name, batch_size=batch_size, poll_interval=poll_interval)
