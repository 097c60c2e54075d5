"""Group commit, shared by every backend: the queue, the commit loop, and the steps of one
batch.

``submit`` queues a validated append (or a claim) and returns a future. One loop takes
everything queued and hands it to the backend's ``_write_batch``, which opens a write
transaction (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), runs the
batch's steps (:meth:`GroupCommitter._steps`), commits, and only then are the callers
answered. Appends that arrive during a commit form the next batch, so many concurrent
callers share one durable commit.

The steps are written once, as a generator that yields the reads and writes it needs
(:mod:`._ops`) and receives their results: the backend only executes each op with its
driver. SQLite runs the whole generator on its writer thread, one hop per batch;
PostgreSQL drives it with ``await``. So what a batch decides (appends planned against the
projection, then claims chosen under the same lock) is the same on both backends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final, TypeAlias

from tasktrail.errors import TasktrailError
from tasktrail.events import Event, NewEvent, TaskClaimed, TaskStarted
from tasktrail.projection import Task
from tasktrail.store._append import prepare_append
from tasktrail.store._claim import ClaimRequest, ClaimResult, QueuePage, QueuePosition, choose
from tasktrail.store._latency import LatencyHistogram
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
)
from tasktrail.store._plan import (
    AppendResult,
    BatchPlan,
    PendingAppend,
    plan_batch,
)

__all__ = ["SLOW_COMMIT", "GroupCommitter", "Outcome", "Queued", "Request", "Steps"]

_log = logging.getLogger("tasktrail.store")
_CACHE_LIMIT: Final = 50_000  # live tasks kept between commits
SLOW_COMMIT: Final = 1.0
"""Seconds after which a commit is logged as slow (a warning of ``tasktrail.store``)."""
_PAGE: Final = 8
"""Queue rows read beyond the slots asked for, on the first page of a claim's walk."""
_MAX_PAGE: Final = 2048
"""The most queue rows read by one page (pages double while the walk goes on)."""

Request: TypeAlias = PendingAppend | ClaimRequest
Outcome: TypeAlias = AppendResult | ClaimResult | TasktrailError
Steps: TypeAlias = Generator[Op, Any, tuple[list[Outcome], dict[str, Task | None], int | None]]


async def _wait(signal: asyncio.Event, timeout: float) -> bool:
    """Whether ``signal`` was set within ``timeout`` seconds."""
    # asyncio.timeout, not wait_for: in 3.11 wait_for can lose a cancellation that
    # arrives while it cancels its inner wait, and then never returns.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            return await signal.wait()
    return False


class Queued:
    """One caller's request in the queue, with the future that answers it."""

    __slots__ = ("future", "request", "size")

    def __init__(self, request: Request, future: asyncio.Future[Any]) -> None:
        self.request = request
        self.future = future
        self.size = len(request.events) if isinstance(request, PendingAppend) else request.slots


class GroupCommitter(ABC):
    """Owns a store's appends: the queue, the commit loop, the task cache."""

    def __init__(
        self,
        *,
        name: str,
        lock: asyncio.Lock,
        clock: Callable[[], float],
        max_batch_events: int,
        max_event_bytes: int,
    ) -> None:
        self._write_lock = lock
        self._clock = clock
        self.max_batch_events = max_batch_events
        self.max_event_bytes = max_event_bytes
        self._queue: list[Queued] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = False
        self._committed = asyncio.Event()
        self._external = asyncio.Event()
        self.commits = 0
        """How many batches this store has committed (that wrote something)."""
        self.latency = LatencyHistogram()
        """Seconds each batch held the write lock, from its transaction's start to its
        commit (what a caller waits beyond the queue)."""
        self.own_sequences: collections.deque[int] = collections.deque(maxlen=256)
        """The last sequence number of this store's latest commits."""
        self._live_tasks: dict[str, Task] = {}
        self._cache_sequence = -1
        self._loop = asyncio.get_running_loop().create_task(
            self._run_commit_loop(), name=f"tasktrail-commit:{name}"
        )

    # -- what a backend provides -------------------------------------------------------------

    @abstractmethod
    async def _write_batch(
        self, batch: list[Queued]
    ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
        """Run :meth:`_steps` for ``batch`` in one write transaction, under the write lock;
        return what it returned. A driver error is raised as a :class:`TasktrailError`."""

    async def _commit(self, batch: list[Queued]) -> None:
        """Write one batch, then answer every caller of it: with its outcome, or with the
        error that failed the whole batch."""
        started = time.monotonic()
        try:
            async with self._write_lock:
                began = time.perf_counter()
                outcomes, tasks, written = await self._write_batch(batch)
                self.latency.observe(time.perf_counter() - began)
        except TasktrailError as err:
            _log.warning("a commit of %d request(s) failed: %s", len(batch), err)
            self._fail(batch, err)
            return
        except BaseException as err:
            self._fail(batch, err)
            raise
        took = time.monotonic() - started
        if took >= SLOW_COMMIT:
            _log.warning(
                "a commit of %d request(s) took %.1f s (a slow disk, or the write lock held "
                "by another connection)", len(batch), took,
            )  # fmt: skip
        self._answer(batch, outcomes, tasks, written)

    # -- the queue ---------------------------------------------------------------------------

    def submit(self, request: Request) -> asyncio.Future[Any]:
        """Queue ``request`` for the next commit; the future resolves after it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
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
        self._cache_sequence = -1

    def signal_commit(self) -> None:
        """Wake everyone in :meth:`wait_for_commit` (events were committed)."""
        self._committed.set()
        self._committed = asyncio.Event()

    def signal_external(self) -> None:
        """Another process committed (a hint): wake :meth:`wait_for_external` and
        :meth:`wait_for_commit` alike."""
        self._external.set()
        self._external = asyncio.Event()
        self.signal_commit()

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when a commit (of any process) is signalled, or after ``timeout`` seconds."""
        await _wait(self._committed, timeout)

    async def wait_for_external(self, timeout: float) -> bool:
        """Return True when another process's commit is signalled, False after ``timeout``
        seconds."""
        return await _wait(self._external, timeout)

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
        """The oldest queued requests, up to ``max_batch_events`` events (at least one)."""
        size = count = 0
        for item in self._queue:
            if count and size + item.size > self.max_batch_events:
                break
            size += item.size
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    # -- answering -----------------------------------------------------------------------------

    def _answer(
        self,
        batch: list[Queued],
        outcomes: list[Outcome],
        tasks: dict[str, Task | None],
        written: int | None,
    ) -> None:
        """Tell each caller of a committed batch what became of its request; ``written``
        is the last sequence number the batch wrote (``None``: it wrote nothing)."""
        if written is not None:
            self._remember(tasks, written)
            self.commits += 1
            self.own_sequences.append(written)
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, TasktrailError):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
        if written is not None:
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

    # -- the steps of one batch ------------------------------------------------------------------

    def _steps(self, batch: list[Queued], *, careful: bool) -> Steps:
        """Plan and write one batch: its appends first, then its claims, which see them.

        Returns (an outcome per request, every task the batch read or wrote, the last
        sequence number written or ``None`` when it wrote nothing). The projection rows of
        live tasks are cached between commits, valid only while nobody else wrote: if the
        log's tail is not the one this store last committed (another process appended),
        the cache is dropped. With
        ``careful``, every event id of the batch is looked up first (a retry after an
        ambiguous commit); otherwise only those of appends the first plan refused.
        """
        last_sequence, last_hash = yield ReadTail()
        tail = last_sequence
        if careful or last_sequence != self._cache_sequence:
            self._live_tasks.clear()
        appends = [item.request for item in batch if isinstance(item.request, PendingAppend)]
        tasks: dict[str, Task | None] = {}
        missing = []
        for request in appends:
            if request.stream_id not in tasks:
                cached = self._live_tasks.get(request.stream_id)
                tasks[request.stream_id] = cached
                if cached is None:
                    missing.append(request.stream_id)
        if missing:
            tasks.update((yield ReadTasks(missing)))
        timestamp = self._clock()
        outcomes: dict[int, Outcome] = {}
        if appends:
            limited = any(request.limit is not None for request in appends)
            counts = (yield ReadActive()) if limited else None
            plan = yield from self._plan_appends(
                appends, tasks, counts, careful, last_sequence, last_hash, timestamp
            )
            if plan.event_rows:
                yield Write(plan.event_rows, list(plan.task_rows.values()), plan.last_sequence)
            last_sequence, last_hash = plan.last_sequence, plan.last_hash
            results = iter(plan.outcomes)
            for index, item in enumerate(batch):
                if isinstance(item.request, PendingAppend):
                    outcomes[index] = next(results)
        for index, item in enumerate(batch):
            if isinstance(item.request, ClaimRequest):
                claim, last_sequence, last_hash = yield from self._claim(
                    item.request, tasks, last_sequence, last_hash, timestamp, careful=careful
                )
                outcomes[index] = claim
        written = last_sequence if last_sequence != tail else None
        return [outcomes[index] for index in range(len(batch))], tasks, written

    def _plan_appends(
        self,
        appends: list[PendingAppend],
        tasks: dict[str, Task | None],
        counts: dict[str, int] | None,
        careful: bool,
        last_sequence: int,
        last_hash: str,
        timestamp: float,
    ) -> Generator[Op, Any, BatchPlan]:
        initial = dict(tasks)

        def plan(known: dict[str, tuple[str, int, int]]) -> BatchPlan:
            tasks.clear()
            tasks.update(initial)
            return plan_batch(
                appends,
                active=None if counts is None else dict(counts),
                tasks=tasks,
                known_ids=known,
                last_sequence=last_sequence,
                last_hash=last_hash,
                timestamp=timestamp,
            )

        def ids(requests: Sequence[PendingAppend]) -> list[str]:
            return [e.event_id for request in requests for e in request.events]

        if careful:
            return plan((yield ReadKnownIds(ids(appends))))
        # Fast path: assume fresh event ids. A refused append may be the retry of one
        # already stored (it then conflicts with itself): look its ids up, plan again.
        first = plan({})
        refused = [
            request
            for request, outcome in zip(appends, first.outcomes, strict=True)
            if isinstance(outcome, TasktrailError)
        ]
        if refused:
            known = yield ReadKnownIds(ids(refused))
            if known:
                return plan(known)
        return first

    def _claim(
        self,
        request: ClaimRequest,
        tasks: dict[str, Task | None],
        last_sequence: int,
        last_hash: str,
        timestamp: float,
        *,
        careful: bool,
    ) -> Generator[Op, Any, tuple[ClaimResult, int, str]]:
        """Choose the tasks ``request`` may start, walking the queue page by page, and
        append their claims (and starts) after the batch's appends.

        A request tried again (its answer lost after a commit that may have happened)
        first looks for the claims it already made: those are its answer.
        """
        if careful or request.retry:
            made: list[str] = yield ReadClaimed(*request.id_range())
            if made:
                found: dict[str, Task] = yield ReadTasks(made)
                mine = [
                    task for task in found.values()
                    if task.is_active and task.worker_id == request.worker_id
                ]  # fmt: skip
                return ClaimResult(mine), last_sequence, last_hash
        counts: dict[str, int] = dict((yield ReadActive()))
        paused_agents, paused_keys = yield ReadPaused()  # read under the write lock
        full = {key for key, limit in request.limits.items() if counts.get(key, 0) >= limit}
        agents = None if request.agents is None else tuple(sorted(request.agents))
        task_ids = None if request.task_ids is None else tuple(sorted(request.task_ids))
        chosen: list[Task] = []
        after: QueuePosition | None = None
        size = request.slots + _PAGE  # a few more than wanted: some may not be startable
        while len(chosen) < request.slots:
            page = QueuePage(
                now=request.now, limit=size, agents=agents, task_ids=task_ids,
                full_keys=tuple(sorted(full)), after=after,
                paused_agents=paused_agents, paused_keys=paused_keys,
            )  # fmt: skip
            rows: list[tuple[QueuePosition, Task]] = yield ReadQueue(page)
            choose(rows, request=request, counts=counts, full=full, chosen=chosen)
            if len(rows) < page.limit:
                break
            after = rows[-1][0]
            size = min(size * 2, _MAX_PAGE)
        next_at = None
        if len(chosen) < request.slots:
            next_at = yield ReadNextAt(request.now, agents, task_ids)
        if not chosen:
            return ClaimResult([], next_at), last_sequence, last_hash
        claims: list[PendingAppend] = []
        for task in chosen:
            payloads: list[Event] = [
                TaskClaimed(worker_id=request.worker_id, attempt=task.attempt + 1)
            ]
            if task.agent in request.start_agents:
                payloads.append(TaskStarted())
            events = [
                NewEvent(
                    payload, actor=request.worker_id, event_id=request.event_id(len(claims) * 2 + k)
                )
                for k, payload in enumerate(payloads)
            ]
            claims.append(
                prepare_append(task.id, events, task.version, max_event_bytes=self.max_event_bytes)
            )
            tasks[task.id] = task
        plan = plan_batch(
            claims,
            tasks=tasks,
            known_ids={},
            last_sequence=last_sequence,
            last_hash=last_hash,
            timestamp=timestamp,
        )
        claimed = [outcome.task for outcome in plan.outcomes if isinstance(outcome, AppendResult)]
        if plan.event_rows:
            yield Write(plan.event_rows, list(plan.task_rows.values()), plan.last_sequence)
        return ClaimResult(claimed, next_at), plan.last_sequence, plan.last_hash
