"""Group commit, shared by every backend: the queue, the commit loop, the planning reads.

``submit`` queues a validated append and returns a future. One loop takes everything
queued and hands it to the backend's ``_commit``, which opens a write transaction (holding
the backend's write lock: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL),
calls :meth:`GroupCommitter._plan` to read the log's tail and the current rows of the
streams involved and let :func:`plan_batch` decide each append, writes the plan, commits,
and only then answers each caller. Appends that arrive during a commit form the next
batch, so many concurrent callers share one durable commit.

A backend supplies the reads the plan depends on (:meth:`GroupCommitter._tail`,
``_task_rows``, ``_active_counts``, ``_known_ids``), all run inside its write transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Final

from tasktrail.errors import TasktrailError
from tasktrail.projection import Task
from tasktrail.store._plan import AppendResult, BatchPlan, PendingAppend, plan_batch

__all__ = ["GroupCommitter", "Queued"]

_CACHE_LIMIT: Final = 50_000  # live tasks kept between commits


class Queued:
    """One caller's append in the queue, with the future that answers it."""

    __slots__ = ("future", "request", "size")

    def __init__(self, request: PendingAppend, future: asyncio.Future[AppendResult]) -> None:
        self.request = request
        self.future = future
        self.size = len(request.events)


class GroupCommitter(ABC):
    """Owns a store's appends: the queue, the commit loop, the task cache."""

    def __init__(
        self, *, name: str, lock: asyncio.Lock, clock: Callable[[], float], max_batch_events: int
    ) -> None:
        self._write_lock = lock
        self._clock = clock
        self.max_batch_events = max_batch_events
        self._queue: list[Queued] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = False
        self._committed = asyncio.Event()
        self._live_tasks: dict[str, Task] = {}
        self._cache_sequence = -1
        self._loop = asyncio.get_running_loop().create_task(
            self._run_commit_loop(), name=f"tasktrail-commit:{name}"
        )

    # -- what a backend provides -------------------------------------------------------------

    @abstractmethod
    async def _write_batch(self, batch: list[Queued]) -> tuple[BatchPlan, dict[str, Task | None]]:
        """Plan and write one batch in one transaction, under the write lock; return the
        plan and the tasks it read. A driver error is raised as a :class:`TasktrailError`."""

    @abstractmethod
    async def _tail(self, db: Any) -> tuple[int, str]:
        """(sequence, hash) of the last event in the log, (0, GENESIS) when it is empty."""

    @abstractmethod
    async def _task_rows(self, db: Any, task_ids: list[str]) -> dict[str, Task]:
        """The projection of each of ``task_ids`` that exists."""

    @abstractmethod
    async def _active_counts(self, db: Any) -> dict[str, int]:
        """Starting/running tasks per limit key, read under the write lock."""

    @abstractmethod
    async def _known_ids(self, db: Any, event_ids: list[str]) -> dict[str, tuple[str, int, int]]:
        """The stored (stream, version, sequence) of each of ``event_ids`` in the log."""

    async def _commit(self, batch: list[Queued]) -> None:
        """Write one batch, then answer every caller of it: with its outcome, or with the
        error that failed the whole batch."""
        try:
            async with self._write_lock:
                plan, tasks = await self._write_batch(batch)
        except TasktrailError as err:
            self._fail(batch, err)
            return
        except BaseException as err:
            self._fail(batch, err)
            raise
        self._answer(batch, plan, tasks)

    # -- the queue ---------------------------------------------------------------------------

    def submit(self, request: PendingAppend) -> asyncio.Future[AppendResult]:
        """Queue ``request`` for the next commit; the future resolves after it."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(Queued(request, future))
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

    def signal_commit(self) -> None:
        """Wake everyone in :meth:`wait_for_commit` (events were committed)."""
        self._committed.set()
        self._committed = asyncio.Event()

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when a commit is signalled, or after ``timeout`` seconds."""
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

    def _take_batch(self) -> list[Queued]:
        """The oldest queued appends, up to ``max_batch_events`` events (at least one)."""
        size = count = 0
        for item in self._queue:
            if count and size + item.size > self.max_batch_events:
                break
            size += item.size
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    # -- answering -----------------------------------------------------------------------------

    def _answer(self, batch: list[Queued], plan: BatchPlan, tasks: dict[str, Task | None]) -> None:
        """Tell each caller of a committed batch what became of its append."""
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
            self.signal_commit()

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
    def _fail(batch: list[Queued], error: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                if isinstance(error, asyncio.CancelledError):
                    item.future.cancel()
                else:
                    item.future.set_exception(error)

    # -- planning --------------------------------------------------------------------------------

    async def _plan(
        self, db: Any, batch: list[Queued], *, careful: bool
    ) -> tuple[BatchPlan, dict[str, Task | None]]:
        """Read what the batch depends on (under the write lock) and plan it.

        The projection rows of live tasks are cached between commits. The cache is valid
        only while nobody else wrote: if the log's tail is not the one this store last
        committed (another process appended), the cache is dropped and rows are read.
        With ``careful``, every event id of the batch is looked up first (a retry after an
        ambiguous commit); otherwise only those of appends the first plan refused.
        """
        last_sequence, last_hash = await self._tail(db)
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
        if missing:
            tasks.update(await self._task_rows(db, missing))
        initial = dict(tasks)
        timestamp = self._clock()

        limited = any(item.request.limit is not None for item in batch)
        counts = await self._active_counts(db) if limited else None

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

        def ids(items: list[Queued]) -> list[str]:
            return [e.event_id for item in items for e in item.request.events]

        if careful:
            return plan(await self._known_ids(db, ids(batch))), tasks
        # Fast path: assume fresh event ids. A refused append may be the retry of one
        # already stored (it then conflicts with itself): look its ids up, plan again.
        first = plan({})
        refused = [
            item
            for item, outcome in zip(batch, first.outcomes, strict=True)
            if isinstance(outcome, TasktrailError)
        ]
        if refused and (known := await self._known_ids(db, ids(refused))):
            return plan(known), tasks
        return first, tasks
