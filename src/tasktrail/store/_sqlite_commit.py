"""Group commit for the SQLite store.

``submit`` queues a validated append and returns a future. One loop takes everything
queued, opens ``BEGIN IMMEDIATE``, reads the log's tail and the current rows of the streams
involved, lets :func:`plan_batch` decide each append, writes the accepted events and
projection rows, commits, and only then answers each caller. Appends that arrive during a
commit form the next batch, so many concurrent callers share one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from typing import Final

import aiosqlite
import msgspec

from tasktrail._crashpoints import crash_point
from tasktrail.errors import CorruptDatabaseError, TasktrailError
from tasktrail.projection import Task
from tasktrail.store._chain import GENESIS
from tasktrail.store._plan import AppendResult, BatchPlan, PendingAppend, plan_batch
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
_CACHE_LIMIT: Final = 50_000  # live tasks kept between commits
_decode_task = msgspec.json.Decoder(Task).decode


def decode_task(record: str | bytes) -> Task:
    """A ``tasks.record`` as a Task; a damaged record is a CorruptDatabaseError."""
    try:
        return _decode_task(record)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as err:
        raise CorruptDatabaseError(
            f"a row of the tasks projection is damaged ({err}); run rebuild() to recreate "
            "the projection from the log"
        ) from err


def chunks(items: list[str]) -> Iterable[list[str]]:
    """``items`` in slices small enough for one ``IN (...)`` query."""
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def marks(count: int) -> str:
    """``count`` SQL placeholders."""
    return ",".join("?" * count)


class _Queued:
    __slots__ = ("future", "request", "size")

    def __init__(self, request: PendingAppend, future: asyncio.Future[AppendResult]) -> None:
        self.request = request
        self.future = future
        self.size = len(request.events)


class GroupCommitter:
    """Owns the writer connection's appends: the queue, the commit loop, the task cache."""

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
        self._write_lock = lock
        self._clock = clock
        self.max_batch_events = max_batch_events
        self._queue: list[_Queued] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = False
        self._committed = asyncio.Event()
        self._live_tasks: dict[str, Task] = {}
        self._cache_sequence = -1
        self._loop = asyncio.get_running_loop().create_task(
            self._run_commit_loop(), name=f"tasktrail-commit:{path}"
        )

    def submit(self, request: PendingAppend) -> asyncio.Future[AppendResult]:
        """Queue ``request`` for the next commit; the future resolves after it."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(request, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Commit what is queued, then stop the loop."""
        self._closing = True
        self._wakeup.set()
        await self._loop

    def forget(self) -> None:
        """Drop the cached tasks (the projection was rewritten)."""
        self._live_tasks.clear()

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when this committer commits events, or after ``timeout`` seconds."""
        signal = self._committed
        # asyncio.timeout, not wait_for: in 3.11 wait_for can lose a cancellation that
        # arrives while it cancels its inner wait, and then never returns.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await signal.wait()

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
            self._idle.set()
            if self._closing:
                return

    async def drain(self) -> None:
        """Return once every append queued so far is committed (or failed)."""
        if self._queue:
            self._idle.clear()
            self._wakeup.set()
            await self._idle.wait()
        async with self._write_lock:  # a batch being written holds the lock
            pass

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
        except DriverError as err:
            error: BaseException = translate(err, self._path)
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
        for chunk in chunks(missing):
            rows = await db.execute_fetchall(
                f"SELECT id, record FROM tasks WHERE id IN ({marks(len(chunk))})", chunk
            )
            tasks.update((r[0], decode_task(r[1])) for r in rows)
        initial = dict(tasks)
        timestamp = self._clock()

        limited = any(item.request.limit is not None for item in batch)
        counts = await self._active_counts() if limited else None

        def plan(known: dict[str, tuple[str, int, int]]) -> BatchPlan:
            tasks.clear()
            tasks.update(initial)
            return plan_batch(
                (item.request for item in batch),
                active=None if counts is None else dict(counts),
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

    async def _active_counts(self) -> dict[str, int]:
        """Starting/running tasks per limit key, read under the write lock."""
        rows = await self._db.execute_fetchall(ACTIVE_COUNTS)
        return {str(key): int(count) for key, count in rows}

    @staticmethod
    async def _known_ids(
        db: aiosqlite.Connection, batch: list[_Queued]
    ) -> dict[str, tuple[str, int, int]]:
        """The stored (stream, version, sequence) of every event id of ``batch`` in the log."""
        event_ids = [e.event_id for item in batch for e in item.request.events]
        known: dict[str, tuple[str, int, int]] = {}
        for chunk in chunks(event_ids):
            rows = await db.execute_fetchall(
                f"SELECT event_id, stream_id, version, seq FROM events "
                f"WHERE event_id IN ({marks(len(chunk))})",
                chunk,
            )
            known.update((r[0], (r[1], r[2], r[3])) for r in rows)
        return known
