"""The SQLite event store (aiosqlite), with group commit.

Two connections: a writer, used only by the store's commit loop, and a reader for queries
(WAL lets readers run beside the writer and never see an uncommitted batch).

Group commit: ``append`` validates and encodes its events in the caller's task, queues them
and waits. The commit loop takes everything queued, opens ``BEGIN IMMEDIATE``, reads the
log's tail and the current rows of the streams involved, lets :func:`plan_batch` decide
each append, writes the accepted events and projection rows, commits (``synchronous=FULL``
by default: on disk), and only then answers each caller. Appends that arrive during a
commit form the next batch, so many concurrent callers share one fsync.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, Self

import aiosqlite
import msgspec

from tasktrail.errors import (
    IncompatibleSchemaError,
    InvalidInputError,
    PayloadTooLargeError,
    StorageBusyError,
    StorageError,
    StoreClosedError,
    TamperedLogError,
    TaskNotFoundError,
    TasktrailError,
)
from tasktrail.events import (
    BUILTIN_UPCASTERS,
    Event,
    NewEvent,
    RecordedEvent,
    Upcaster,
    decode_payload,
    encode_payload,
)
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.store._chain import GENESIS, event_hash
from tasktrail.store._migrate import migrations
from tasktrail.store._plan import (
    AppendResult,
    BatchPlan,
    PendingAppend,
    TaskRow,
    plan_batch,
    task_row,
)
from tasktrail.store._sqlite_errors import translate, translating
from tasktrail.store._validate import check_actor, check_task_id
from tasktrail.store.base import VerifyReport
from tasktrail.store.subscription import Subscription

__all__ = ["SQLiteEventStore"]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_EVENT_COLUMNS: Final = (
    "seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, reason, "
    "correlation_id, CAST(data AS BLOB), hash"
)
_INSERT_EVENT: Final = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_TASK: Final = (
    "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "state = excluded.state, version = excluded.version, last_seq = excluded.last_seq, "
    "updated_at = excluded.updated_at, record = excluded.record"
)
_CHUNK: Final = 500  # ids per "IN (...)" query
_CACHE_LIMIT: Final = 50_000  # live tasks kept between commits
_APPEND_ONLY_TRIGGERS: Final = frozenset({"events_append_only_update", "events_append_only_delete"})
_decode_task = msgspec.json.Decoder(Task).decode


class _Queued:
    __slots__ = ("future", "request", "size")

    def __init__(self, request: PendingAppend, future: asyncio.Future[AppendResult]) -> None:
        self.request = request
        self.future = future
        self.size = len(request.events)


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
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: list[_Queued] = []
        self._wakeup = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._commit_loop: asyncio.Task[None] | None = None
        self._committed = asyncio.Event()
        self._live_tasks: dict[str, Task] = {}
        self._cache_sequence = -1
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
            raise StorageError(
                f"cannot open the database {self.path}: the directory {directory} does not exist"
            )
        try:
            with translating(self.path):
                self._writer = await self._connect()
                await self._init_schema(self._writer)
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            for db in (self._writer, self._reader):
                if db is not None:
                    await db.close()
            self._writer = self._reader = None
            raise
        self._commit_loop = asyncio.get_running_loop().create_task(
            self._run_commit_loop(), name=f"tasktrail-commit:{self.path}"
        )
        self._opened = True
        return self

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await db.execute(f"PRAGMA synchronous = {self.synchronous}")
            await db.execute("PRAGMA foreign_keys = OFF")
        except BaseException:
            await db.close()
            raise
        return db

    async def _init_schema(self, db: aiosqlite.Connection) -> None:
        # journal_mode=WAL is persistent; switching needs a moment alone with the file, so
        # processes racing to create it retry within the busy timeout.
        deadline = time.monotonic() + self.busy_timeout
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
            raise StorageBusyError(f"could not switch {self.path} to WAL mode (got {row!r})")
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
            raise IncompatibleSchemaError(self.path, current, len(migrations()))

    async def close(self) -> None:
        """Finish the queued appends, then close. Closing twice is harmless."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        try:
            if self._commit_loop is not None:
                await self._commit_loop
        finally:
            for db in (self._writer, self._reader):
                if db is not None:
                    await db.close()
            self._writer = self._reader = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._opened and not self._closing:
            _warn(f"SQLiteEventStore({self.path!r}) was never closed", ResourceWarning, source=self)

    def _check_open(self) -> None:
        if not self._opened or self._closing:
            raise StoreClosedError()

    # -- appending -----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
    ) -> AppendResult:
        """Append ``events`` to the task ``stream_id``, atomically; return after commit.

        ``expected_version`` is the stream's version the caller based its decision on
        (0: the task must not exist yet); ``None`` skips that check. Every event is
        checked against the lifecycle. Appending the same :class:`NewEvent` objects again
        returns the stored result with ``duplicate=True`` and writes nothing.

        Raises VersionConflictError, IllegalTransitionError, TaskExistsError,
        TaskNotFoundError, EventIdConflictError, InvalidInputError or StorageError; in
        every case nothing of this append was written.
        """
        self._check_open()
        request = self._prepare(stream_id, events, expected_version)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(request, future))
        self._wakeup.set()
        return await future

    def _prepare(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None
    ) -> PendingAppend:
        check_task_id(stream_id)
        if not events:
            raise InvalidInputError("append needs at least one event")
        if expected_version is not None and (
            not isinstance(expected_version, int) or expected_version < 0
        ):
            raise InvalidInputError(
                f"expected_version must be an int >= 0, not {expected_version!r}"
            )
        data: list[bytes] = []
        for new in events:
            if not isinstance(new, NewEvent) or not isinstance(new.payload, Event):
                raise InvalidInputError(f"expected NewEvent(payload=<Event>), got {new!r:.80}")
            check_actor(new.actor)
            encoded = encode_payload(new.payload)
            if len(encoded) > self.max_event_bytes:
                raise PayloadTooLargeError(len(encoded), self.max_event_bytes)
            for text in (new.reason, new.correlation_id, new.event_id):
                if text is not None:
                    try:
                        text.encode()
                    except (UnicodeEncodeError, AttributeError) as err:
                        raise InvalidInputError(f"invalid text {text!r:.40}: {err}") from err
            data.append(encoded)
        return PendingAppend(stream_id, list(events), data, expected_version)

    async def _run_commit_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._take_batch()
                try:
                    await self._commit(batch)
                except Exception as err:  # a bug must fail its callers, not stop the loop
                    self._fail(batch, err)
            if self._closing:
                return

    def _take_batch(self) -> list[_Queued]:
        """The oldest queued appends, up to ``max_batch_events`` events (at least one)."""
        size = count = 0
        for item in self._queue:
            if count and size + item.size > self.max_batch_events:
                break
            size += item.size
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _commit(self, batch: list[_Queued]) -> None:
        """Write one batch in one transaction, then answer its callers.

        The fast path trusts that event ids are fresh and lets the UNIQUE index catch a
        retried append; on that (rare) IntegrityError the batch is planned again, this
        time looking up every event id, so the retry is answered as a duplicate.
        """
        try:
            async with self._write_lock:
                try:
                    plan, tasks = await self._write(batch, careful=False)
                except sqlite3.IntegrityError:
                    plan, tasks = await self._write(batch, careful=True)
        except sqlite3.Error as err:
            error: BaseException = translate(err, self.path)
            error.__cause__ = err
            self._fail(batch, error)
            return
        except BaseException as err:
            self._fail(batch, err)
            raise
        if plan.event_rows:
            self._remember(tasks, plan.last_sequence)
        for item, outcome in zip(batch, plan.outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, TasktrailError):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
        if plan.event_rows:
            self._committed.set()
            self._committed = asyncio.Event()

    async def _write(
        self, batch: list[_Queued], *, careful: bool
    ) -> tuple[BatchPlan, dict[str, Task | None]]:
        db = self._writer
        assert db is not None
        await db.execute("BEGIN IMMEDIATE")
        try:
            plan, tasks = await self._plan(db, batch, careful=careful)
            if plan.event_rows:
                await db.executemany(_INSERT_EVENT, plan.event_rows)
                await db.executemany(_UPSERT_TASK, plan.task_rows.values())
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return plan, tasks

    def _remember(self, tasks: dict[str, Task | None], last_sequence: int) -> None:
        """Keep the live tasks a commit wrote, for the next batch's lifecycle checks."""
        cache = self._live_tasks
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        for task_id, task in tasks.items():
            if task is None or task.is_terminal:
                cache.pop(task_id, None)
            else:
                cache[task_id] = task
        self._cache_sequence = last_sequence

    @staticmethod
    def _fail(batch: list[_Queued], error: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                if isinstance(error, asyncio.CancelledError):
                    item.future.cancel()
                else:
                    item.future.set_exception(error)

    async def _plan(
        self, db: aiosqlite.Connection, batch: list[_Queued], *, careful: bool
    ) -> tuple[BatchPlan, dict[str, Task | None]]:
        """Read what the batch depends on (under the write lock) and plan it.

        The projection rows of live tasks are cached between commits. The cache is valid
        only while nobody else wrote: if the log's tail is not the one this store last
        committed (another process appended), the cache is dropped and rows are read.
        """
        tail = list(
            await db.execute_fetchall("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        )
        last_sequence, last_hash = (tail[0][0], tail[0][1]) if tail else (0, GENESIS)
        if careful or last_sequence != self._cache_sequence:
            self._live_tasks.clear()
        tasks: dict[str, Task | None] = {}
        missing = []
        for item in batch:
            task_id = item.request.stream_id
            if task_id not in tasks:
                cached = self._live_tasks.get(task_id)
                tasks[task_id] = cached
                if cached is None:
                    missing.append(task_id)
        for chunk in _chunks(missing):
            rows = await db.execute_fetchall(
                f"SELECT id, record FROM tasks WHERE id IN ({_marks(len(chunk))})", chunk
            )
            tasks.update((r[0], _decode_task(r[1])) for r in rows)
        initial = dict(tasks)
        timestamp = self._clock()

        def plan(known: dict[str, tuple[str, int, int]]) -> BatchPlan:
            tasks.clear()
            tasks.update(initial)
            return plan_batch(
                (item.request for item in batch),
                tasks=tasks,
                known_ids=known,
                last_sequence=last_sequence,
                last_hash=last_hash,
                timestamp=timestamp,
            )

        if careful:
            return plan(await self._known_ids(db, batch)), tasks
        # Fast path: assume fresh event ids. A refused append may be the retry of one
        # already stored (it then conflicts with itself): look its ids up, plan again.
        first = plan({})
        refused = [
            item
            for item, outcome in zip(batch, first.outcomes, strict=True)
            if isinstance(outcome, TasktrailError)
        ]
        if refused and (known := await self._known_ids(db, refused)):
            return plan(known), tasks
        return first, tasks

    @staticmethod
    async def _known_ids(
        db: aiosqlite.Connection, batch: list[_Queued]
    ) -> dict[str, tuple[str, int, int]]:
        """The stored (stream, version, sequence) of every event id of ``batch`` in the log."""
        event_ids = [e.event_id for item in batch for e in item.request.events]
        known: dict[str, tuple[str, int, int]] = {}
        for chunk in _chunks(event_ids):
            rows = await db.execute_fetchall(
                f"SELECT event_id, stream_id, version, seq FROM events "
                f"WHERE event_id IN ({_marks(len(chunk))})",
                chunk,
            )
            known.update((r[0], (r[1], r[2], r[3])) for r in rows)
        return known

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when this store commits events, or after ``timeout`` seconds.

        Commits by other processes are not signalled: callers poll with a timeout.
        """
        signal = self._committed
        try:
            await asyncio.wait_for(signal.wait(), timeout)
        except TimeoutError:
            return

    # -- reading ---------------------------------------------------------------------------

    def _read_db(self) -> aiosqlite.Connection:
        self._check_open()
        assert self._reader is not None
        return self._reader

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> Iterable[sqlite3.Row]:
        db = self._read_db()
        with translating(self.path):
            return await db.execute_fetchall(sql, params)

    def _event(self, row: Sequence[Any]) -> RecordedEvent:
        payload = decode_payload(
            row[4], row[5], row[10], sequence=row[0], upcasters=self._upcasters
        )
        return RecordedEvent(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            payload,
            row[11],
        )

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one task with ``after_version < version <= to_version``."""
        check_task_id(stream_id)
        rows = await self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ? "
            "AND version <= ? ORDER BY version",
            (stream_id, after_version, to_version if to_version is not None else 2**62),
        )
        return [self._event(row) for row in rows]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of the whole log with a sequence number above ``after``."""
        rows = await self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
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
        return _decode_task(rows[0][0]) if rows else None

    async def list_tasks(
        self,
        *,
        state: TaskState | str | None = None,
        agent: str | None = None,
        parent_id: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first."""
        clauses, params = [], []
        if state is not None:
            try:
                clauses.append("state = ?")
                params.append(TaskState(state).value)
            except ValueError as err:
                raise InvalidInputError(
                    f"unknown state {state!r}; one of {', '.join(TaskState)}"
                ) from err
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if parent_id is not None:
            clauses.append("parent_id = ?")
            params.append(parent_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT record FROM tasks {where} ORDER BY created_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_decode_task(row[0]) for row in await self._query(sql, params)]

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
        if version is not None and at is not None:
            raise InvalidInputError("give version or at, not both")
        if isinstance(at, datetime) and at.utcoffset() is None:
            raise InvalidInputError("at must be an aware datetime (with tzinfo), or unix seconds")
        if version is not None and (not isinstance(version, int) or version < 1):
            raise InvalidInputError(f"version must be an int >= 1, not {version!r}")
        events = await self.history(task_id)
        if version is not None:
            if version > events[-1].version:
                raise InvalidInputError(
                    f"task {task_id!r} has {events[-1].version} versions, not {version}"
                )
            events = events[:version]
        elif at is not None:
            if isinstance(at, datetime):  # compare at the datetime's microsecond precision
                events = list(itertools.takewhile(lambda e: e.recorded_at <= at, events))
            else:
                events = list(itertools.takewhile(lambda e: e.timestamp <= at, events))
        task: Task | None = None
        for event in events:
            task = fold(task, event)
        return task

    # -- checking and rebuilding -----------------------------------------------------------

    async def _scan(self, db: aiosqlite.Connection, chunk: int = 20_000) -> Any:
        """Yield raw event rows in sequence order, in chunks."""
        after = 0
        while True:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, chunk),
                )
            )
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    async def verify(self) -> VerifyReport:
        """Recompute the hash chain over the whole log.

        Returns a :class:`VerifyReport`; raises TamperedLogError naming the first sequence
        number whose stored hash, position or content does not match.
        """
        db = self._read_db()
        previous, expected, count = GENESIS, 1, 0
        with translating(self.path):
            async for rows in self._scan(db):
                for row in rows:
                    sequence = row[0]
                    if sequence != expected:
                        raise TamperedLogError(expected, "this event is missing from the log")
                    digest = event_hash(previous, row[:10], row[10])
                    if digest != row[11]:
                        raise TamperedLogError(
                            sequence, "its stored hash does not match its content"
                        )
                    previous, expected = digest, sequence + 1
                count += len(rows)
            triggers = {
                row[0]
                for row in await db.execute_fetchall(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
                )
            }
        return VerifyReport(
            events=count,
            head_sequence=expected - 1,
            head_hash=previous,
            append_only=triggers >= _APPEND_ONLY_TRIGGERS,
        )

    async def _fold_log(self, db: aiosqlite.Connection) -> dict[str, TaskRow]:
        tasks: dict[str, Task] = {}
        last: dict[str, int] = {}
        async for rows in self._scan(db):
            for row in rows:
                event = self._event(row)
                tasks[event.stream_id] = fold(tasks.get(event.stream_id), event)
                last[event.stream_id] = event.sequence
        return {task_id: task_row(task, last[task_id]) for task_id, task in tasks.items()}

    async def rebuild(self) -> int:
        """Drop the task projection and replay it from the log; returns the task count.

        Runs under the write lock, so no append interleaves with it.
        """
        self._check_open()
        db = self._writer
        assert db is not None
        async with self._write_lock:
            self._live_tasks.clear()
            with translating(self.path):
                await db.execute("BEGIN IMMEDIATE")
                try:
                    rows = await self._fold_log(db)
                    await db.execute("DELETE FROM tasks")
                    await db.executemany(_UPSERT_TASK, rows.values())
                    await db.execute("COMMIT")
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
        return len(rows)

    async def check_projection(self) -> list[str]:
        """Ids of tasks whose projection row differs from a fold of the log (sorted)."""
        db = self._read_db()
        with translating(self.path):
            await db.execute("BEGIN")  # one snapshot for both reads
            try:
                expected = await self._fold_log(db)
                live = {
                    row[0]: tuple(row) for row in await db.execute_fetchall("SELECT * FROM tasks")
                }
            finally:
                await db.execute("COMMIT")
        return sorted(
            task_id
            for task_id in expected.keys() | live.keys()
            if expected.get(task_id) != live.get(task_id)
        )

    # -- subscribers -------------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> int:
        """The saved position of subscriber ``name`` (0 if it never saved one)."""
        rows = list(await self._query("SELECT position FROM checkpoints WHERE name = ?", (name,)))
        return int(rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Durably record that subscriber ``name`` has handled every event up to ``position``."""
        self._check_open()
        db = self._writer
        assert db is not None
        async with self._write_lock:
            with translating(self.path):
                await db.execute(
                    "INSERT INTO checkpoints VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                    "SET position = excluded.position, updated_at = excluded.updated_at",
                    (name, position, self._clock()),
                )

    def subscribe(
        self, name: str, *, batch_size: int = 500, poll_interval: float = 0.5
    ) -> Subscription:
        """A :class:`Subscription` that follows the log from subscriber ``name``'s checkpoint."""
        return Subscription(self, name, batch_size=batch_size, poll_interval=poll_interval)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(count: int) -> str:
    return ",".join("?" * count)
