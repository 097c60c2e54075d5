"""``TaskManager``: runs tasks through runners, durably, with the seed managers' API.

Everything the manager knows is in the log: slots are counted from the projection, a
claim is an optimistic append, a cancel is a request event and its acknowledgement, and
a restart (or another process) finds every task where the log left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Collection, Mapping
from datetime import datetime
from typing import Any, Literal, Self

from tasktrail._crashpoints import crash_point
from tasktrail.errors import (
    ConcurrencyLimitError,
    IllegalTransitionError,
    InvalidInputError,
    StorageError,
    StoreClosedError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TasktrailError,
    VersionConflictError,
    WaitTimeoutError,
)
from tasktrail.events import (
    CancelRequested,
    Event,
    NewEvent,
    OutputAppended,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.lifecycle import ACTIVE_STATES, TaskState
from tasktrail.projection import Task
from tasktrail.runtime.attempt import Attempt
from tasktrail.runtime.clock import Clock, SystemClock
from tasktrail.runtime.context import RunContext, Runner
from tasktrail.runtime.notify import Callback, Notifier
from tasktrail.runtime.reads import ReadBatcher
from tasktrail.runtime.recovery import recover_orphans
from tasktrail.runtime.scheduler import deadline_breach, startable
from tasktrail.runtime.waiting import Waiters
from tasktrail.store import VerifyReport, open_store
from tasktrail.store._validate import check_task_id

__all__ = ["TaskManager"]

_LIVE = (TaskState.PENDING, TaskState.STARTING, TaskState.RUNNING)


async def _first(*awaitables: Awaitable[Any]) -> None:
    """Wait until the first of ``awaitables`` is done; cancel the others."""
    futures = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)


class TaskManager:
    """Runs background tasks durably. Open with ``async with TaskManager(path) as tm:``.

    Args:
        database: a SQLite file path (created if missing).
        max_running: tasks running at once in this manager (``None``: unlimited).
        limits: per concurrency key (the task's ``concurrency_key``, else its agent), the
            most tasks of that key in ``starting``/``running`` across every process.
        poll_interval: seconds between scheduler rounds and between checks for changes
            made by other processes (cancel requests, finished tasks).
        task_ttl: seconds a task may live, from creation, before it fails (``None``: no limit).
        run_timeout: seconds one attempt may run before it fails or is retried.
        queue_timeout: seconds a task may wait in ``pending`` before it fails.
        retention: seconds finished tasks stay in ``list_tasks`` (``None``: forever). The
            log keeps them regardless.
        max_attempts: default attempts per task (retries = attempts - 1).
        retry_backoff: seconds before the second attempt; doubled for each further one.
        cancel_grace: seconds a runner has to stop after a cancel request before it is
            cancelled by force.
        lease_timeout: seconds without a heartbeat after which another process's worker
            counts as dead and its tasks are recovered.
        worker_id: this manager's id in the log (default: host, pid and a random suffix).
        run_tasks: ``False`` for a manager that only launches and inspects (a CLI).
        task_ids: start only these tasks (a foreground runner for tasks it launched
            itself, like ``tasktrail run``); ``None`` (default): any pending task of a
            registered agent.
        clock: the time source (:class:`~tasktrail.testing.FakeClock` in tests).
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        max_running: int | None = 10,
        limits: Mapping[str, int] | None = None,
        poll_interval: float = 2.0,
        task_ttl: float | None = 1800.0,
        run_timeout: float | None = None,
        queue_timeout: float | None = None,
        retention: float | None = None,
        max_attempts: int = 1,
        retry_backoff: float = 1.0,
        cancel_grace: float = 5.0,
        lease_timeout: float = 30.0,
        worker_id: str | None = None,
        run_tasks: bool = True,
        task_ids: Collection[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        for name, value in (
            ("poll_interval", poll_interval), ("task_ttl", task_ttl), ("run_timeout", run_timeout),
            ("queue_timeout", queue_timeout), ("retention", retention),
            ("cancel_grace", cancel_grace), ("lease_timeout", lease_timeout),
            ("retry_backoff", retry_backoff),
        ):  # fmt: skip
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise InvalidInputError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if poll_interval <= 0:
            raise InvalidInputError(f"poll_interval must be > 0 seconds, not {poll_interval!r}")
        if max_running is not None and max_running < 1:
            raise InvalidInputError(f"max_running must be >= 1 or None, not {max_running!r}")
        if max_attempts < 1:
            raise InvalidInputError(f"max_attempts must be >= 1, not {max_attempts!r}")
        self.clock: Clock = clock or SystemClock()
        self.store = open_store(database, clock=self.clock.time)
        self.max_running = max_running
        self.limits = dict(limits or {})
        self.poll_interval = poll_interval
        self.task_ttl = task_ttl
        self.run_timeout = run_timeout
        self.queue_timeout = queue_timeout
        self.retention = retention
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.cancel_grace = cancel_grace
        self.lease_timeout = lease_timeout
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.run_tasks = run_tasks
        self.task_ids = None if task_ids is None else frozenset(task_ids)
        self._runners: dict[str, Runner] = {}
        self._running: dict[str, Attempt] = {}
        self._claiming: set[str] = set()
        self._wake = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._callbacks: dict[str, Callback] = {}
        self._notifier = Notifier(self.store, self.clock, poll_interval)
        self._loops: list[asyncio.Task[None]] = []
        self._last_heartbeat = 0.0
        self._last_recovery = 0.0
        self._last_sweep = 0.0
        self._waiters = Waiters()
        self._reads = ReadBatcher(self.store.get_tasks)
        self._state: Literal["new", "open", "closed"] = "new"

    # -- opening and closing ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise StoreClosedError("manager")
        await self.store.open()
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._state = "open"
        if self.run_tasks:
            await self.store.register_worker(self.worker_id, host=self.host, pid=os.getpid())
            self._last_heartbeat = self._last_recovery = self.clock.time()
            await self.recover()
        self._scheduler = self._group.create_task(
            self._schedule_forever(), name="tasktrail-scheduler"
        )
        self._loops.append(self._group.create_task(self._watch_forever(), name="watch"))
        if self.run_tasks:
            self._loops.append(
                self._group.create_task(
                    self._notifier.notify_parents_forever(), name="notify:parents"
                )
            )
        for name, callback in self._callbacks.items():
            self._start_delivery(name, callback)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: running attempts are cancelled and re-queued, never left ``running``.

        Closing twice is harmless.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        assert self._group is not None
        self._waiters.fail_all(StoreClosedError("manager"))
        try:
            for loop in [self._scheduler, *self._loops]:
                if loop is not None:
                    loop.cancel()
            runs = list(self._running.values())
            for run in runs:
                run.stop("shutdown", "the worker is shutting down")
            for run in runs:
                await run.done.wait()
            await self._group.__aexit__(None, None, None)
            if self.run_tasks:
                await self.store.drain()  # a claim sent before the scheduler stopped
                await self._requeue_unstarted()
                await self.store.stop_worker(self.worker_id)
        finally:
            await self.store.close()

    async def _requeue_unstarted(self) -> None:
        """Re-queue tasks this worker claimed but never ran (a claim committed while the
        manager was closing); they must not wait for recovery."""
        mine = [
            t for t in await self.store.list_tasks(state=ACTIVE_STATES)
            if t.worker_id == self.worker_id
        ]  # fmt: skip
        for task in mine:
            event: Event = TaskCancelled() if task.cancel_requested else TaskRequeued()
            with contextlib.suppress(VersionConflictError, IllegalTransitionError):
                await self._append(
                    task.id, [event], "the worker shut down before the attempt began",
                    actor="system", expected_version=task.version,
                )  # fmt: skip

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreClosedError("manager")

    # -- launching and reading -----------------------------------------------------------------

    def register(self, agent: str, runner: Runner) -> None:
        """Run tasks of ``agent`` with ``runner`` (``async def runner(ctx)``) in this manager."""
        if not agent or not isinstance(agent, str):
            raise InvalidInputError(f"agent must be a non-empty str, not {agent!r}")
        if not callable(runner):
            raise InvalidInputError(f"runner for {agent!r} is not callable: {runner!r}")
        self._runners[agent] = runner
        self._wake.set()

    async def launch(
        self,
        agent: str,
        prompt: str = "",
        *,
        description: str = "",
        parent_id: str | None = None,
        task_id: str | None = None,
        session_id: str | None = None,
        concurrency_key: str | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str = "user",
    ) -> Task:
        """Create a task and return it at once, ``pending``; a worker starts it later.

        Raises TaskExistsError when ``task_id`` is taken (the existing task is untouched)
        and TaskNotFoundError when ``parent_id`` names no task.
        """
        self._check_open()
        if not agent or not isinstance(agent, str):
            raise InvalidInputError(f"agent must be a non-empty str, not {agent!r}")
        attempts = self.max_attempts if max_attempts is None else max_attempts
        if attempts < 1:
            raise InvalidInputError(f"max_attempts must be >= 1, not {attempts!r}")
        if parent_id is not None and await self.store.get_task(parent_id) is None:
            raise TaskNotFoundError(parent_id)
        created = TaskCreated(
            agent=agent, prompt=prompt, description=description, parent_id=parent_id,
            session_id=session_id, concurrency_key=concurrency_key, priority=priority,
            max_attempts=attempts, metadata=dict(metadata or {}),
        )  # fmt: skip
        new_id = task_id if task_id is not None else uuid.uuid4().hex
        result = await self.store.append(
            new_id, [NewEvent(created, actor=actor, correlation_id=parent_id)], expected_version=0
        )
        self._wake.set()
        return result.task

    async def get_task(self, task_id: str) -> Task | None:
        """The task, or ``None`` when there is no task with this id."""
        self._check_open()
        return await self.store.get_task(task_id)

    async def _require(self, task_id: str) -> Task:
        task = await self.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def list_tasks(self, state: TaskState | str | None = None) -> list[Task]:
        """Every task (in ``state``, if given), oldest first; finished ones within retention."""
        self._check_open()
        tasks = await self.store.list_tasks(state=state)
        if self.retention is None:
            return tasks
        horizon = self.clock.time() - self.retention
        return [
            t for t in tasks
            if t.finished_at is None or t.finished_at.timestamp() >= horizon
        ]  # fmt: skip

    async def history(self, task_id: str) -> list[RecordedEvent]:
        """Every event of the task, in order."""
        self._check_open()
        return await self.store.history(task_id)

    async def state_at(
        self, task_id: str, version: int | None = None, at: datetime | float | None = None
    ) -> Task | None:
        """The task as it was at ``version`` or time ``at`` (see the store's ``state_at``)."""
        self._check_open()
        return await self.store.state_at(task_id, version=version, at=at)

    async def verify(self) -> VerifyReport:
        """Recompute the log's hash chain (see the store's ``verify``)."""
        self._check_open()
        return await self.store.verify()

    # -- waiting -----------------------------------------------------------------------------

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is finished and return it.

        Any number of callers may wait, in any process: a finish recorded by this manager
        wakes its waiters at once, one recorded elsewhere within ``poll_interval`` (one
        query per round for all waiters). A cancelled task is returned like any other
        finished task. On timeout raises WaitTimeoutError (a TimeoutError); when the
        manager closes first, StoreClosedError.
        """
        with self._waiters.listen(task_id) as finished:
            task = await self._read_listening(task_id)  # after listening: no finish missed
            if task.is_terminal:
                return task
            if timeout is None:
                return await finished
            await _first(finished, self.clock.sleep(timeout))
            if finished.done() and not finished.cancelled():
                return finished.result()
            raise WaitTimeoutError(task_id, timeout)

    async def _read_listening(self, task_id: str) -> Task:
        """Read a waited-for task; the reads of all callers waiting at once share a query."""
        self._check_open()
        assert self._group is not None
        task = await self._reads.read(check_task_id(task_id), self._group.create_task)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def _watch_forever(self) -> None:
        """Every ``poll_interval``, look up all waited-for tasks at once (finishes recorded
        by other processes) and wake the waiters of those that finished."""
        while True:
            await self.clock.sleep(self.poll_interval)
            if waited := self._waiters.task_ids():
                with contextlib.suppress(TasktrailError):
                    for task in await self.store.get_tasks(waited):
                        if task.is_terminal:
                            self._waiters.finished(task)

    async def get_output(
        self, task_id: str, wait: bool = False, timeout: float | None = None
    ) -> str:
        """The task's output so far (or, with ``wait``, once it finished)."""
        if wait:
            await self.wait(task_id, timeout)
        events = await self.history(task_id)
        return "".join(e.payload.text for e in events if isinstance(e.payload, OutputAppended))

    async def run(
        self, agent: str, prompt: str = "", *, timeout: float | None = None, **options: Any
    ) -> Any:
        """Launch a task, wait for it, return its result.

        Raises TaskFailedError (with the runner's error), TaskCancelledError, or
        WaitTimeoutError after cancelling the task when ``timeout`` runs out.
        """
        task = await self.launch(agent, prompt, **options)
        try:
            done = await self.wait(task.id, timeout)
        except WaitTimeoutError:
            await self.cancel(task.id, force=True)
            raise
        if done.state is TaskState.COMPLETED:
            return done.result
        if done.state is TaskState.FAILED:
            raise TaskFailedError(done.id, done.error, done.reason)
        raise TaskCancelledError(done.id, done.reason)

    # -- external control ------------------------------------------------------------------------

    async def _append(
        self, task_id: str, events: list[Event], reason: str | None = None, *,
        actor: str | None = None, expected_version: int | None = None,
        limit: int | None = None,
    ) -> Task:  # fmt: skip
        result = await self.store.append(
            task_id,
            [NewEvent(e, actor=actor or self.worker_id, reason=reason) for e in events],
            expected_version=expected_version,
            limit=limit,
        )
        self._wake.set()
        if result.task.is_terminal:
            self._waiters.finished(result.task)
        return result.task

    async def complete_task(self, task_id: str, result: Any = None) -> Task:
        """Mark a task completed from outside (its runner, if here, is stopped).

        A pending or starting task is claimed and started in the same append, so its log
        still shows a legal path. A finished task raises IllegalTransitionError.
        """
        return await self._finish_from_outside(task_id, TaskCompleted(result=result))

    async def fail_task(self, task_id: str, error: str | BaseException) -> Task:
        """Mark a task failed from outside. A finished task raises IllegalTransitionError."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return await self._finish_from_outside(task_id, TaskFailed(error=text))

    async def _finish_from_outside(self, task_id: str, outcome: Event) -> Task:
        while True:
            task = await self._require(task_id)
            events: list[Event] = [outcome]
            if isinstance(outcome, TaskCompleted):
                if task.state is TaskState.PENDING:
                    events = [
                        TaskClaimed(worker_id="external", attempt=task.attempt + 1),
                        TaskStarted(),
                        outcome,
                    ]
                elif task.state is TaskState.STARTING:
                    events = [TaskStarted(), outcome]
            try:
                done = await self._append(
                    task_id, events, "set from outside", actor="user", expected_version=task.version
                )
            except VersionConflictError:
                continue
            run = self._running.get(task_id)
            if run is not None:
                run.stop("lost", "finished from outside")
            return done

    async def cancel(self, task_id: str, force: bool = False) -> Task:
        """Cancel a task and all its descendants.

        A pending task is cancelled at once; a starting or running one once its runner
        stopped (within ``cancel_grace``), or at once with ``force``. A finished task is
        returned unchanged. Returns the task as the cancel left it.
        """
        task = await self._require(task_id)
        result = await self._cancel_one(task, force)
        pending = [task_id]
        while pending:
            parent = pending.pop()
            for child in await self.store.list_tasks(parent_id=parent):
                pending.append(child.id)
                await self._cancel_one(child, force)
        return result

    async def cancel_all(self, force: bool = False) -> list[Task]:
        """Cancel every unfinished task; returns them as the cancel left them."""
        self._check_open()
        live = await self.store.list_tasks(state=_LIVE)
        return list(await asyncio.gather(*(self._cancel_one(task, force) for task in live)))

    async def _cancel_one(self, task: Task, force: bool) -> Task:
        while not task.is_terminal:
            at_once = force or task.state is TaskState.PENDING
            events: list[Event] = [CancelRequested(force=force)]
            if at_once:
                events.append(TaskCancelled(forced=force))
            elif task.cancel_requested:
                break  # already requested; the runner is stopping
            try:
                task = await self._append(
                    task.id, events, "cancel requested", actor="user", expected_version=task.version
                )
            except VersionConflictError:
                task = await self._require(task.id)
                continue
            break
        run = self._running.get(task.id)
        if run is not None and not task.is_terminal:
            self._request_stop(run, force)
            await _first(run.done.wait(), self.clock.sleep(self.cancel_grace + self.poll_interval))
            task = await self._require(task.id)
        elif run is not None:
            run.ctx.request_cancel(force=force)
            run.stop("lost", "cancelled")
        return task

    # -- the scheduler ----------------------------------------------------------------------------

    async def _schedule_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except StoreClosedError:
                return
            except TasktrailError:
                pass  # e.g. the database was busy: the next round tries again
            await _first(self._wake.wait(), self.clock.sleep(self.poll_interval))

    async def tick(self) -> None:
        """One scheduler round: heartbeat; every ``poll_interval`` a sweep (deadlines,
        cancels from other processes, output flushes, recovery); then starts.

        The manager runs it every ``poll_interval`` and on every local change; tests with
        a fake clock may call it directly.
        """
        now = self.clock.time()
        if self.run_tasks and now - self._last_heartbeat >= self.lease_timeout / 3:
            await self.store.heartbeat(self.worker_id)
            self._last_heartbeat = now
        if now - self._last_sweep >= self.poll_interval or self._last_sweep == 0.0:
            self._last_sweep = now
            await self._sweep(now)
        if self.run_tasks:
            await self._start_tasks(now)

    def _breach(self, task: Task, now: float) -> tuple[str, str] | None:
        return deadline_breach(
            task, now=now, task_ttl=self.task_ttl, queue_timeout=self.queue_timeout,
            run_timeout=self.run_timeout,
        )  # fmt: skip

    async def _sweep(self, now: float) -> None:
        """Deadlines, cancel requests and finishes from elsewhere, output flushes, recovery.

        Pending tasks past a deadline anyone may fail (the append is optimistic); a running
        task only its own manager stops. Tasks of other live workers are theirs to police.
        """
        horizons = [t for t in (self.task_ttl, self.queue_timeout) if t is not None]
        if horizons:
            overdue = await self.store.queued_tasks(limit=1000, created_before=now - min(horizons))
            for task in overdue:
                breach = self._breach(task, now)
                if breach is not None:
                    with contextlib.suppress(VersionConflictError, IllegalTransitionError):
                        await self._append(
                            task.id, [TaskFailed(error=breach[1])], breach[1], actor="system",
                            expected_version=task.version,
                        )  # fmt: skip
        if self._running:
            current = {t.id: t for t in await self.store.get_tasks(list(self._running))}
            for task_id, run in list(self._running.items()):
                mine = current.get(task_id)
                if mine is None or mine.is_terminal:
                    run.stop("lost", "finished elsewhere")
                    continue
                if mine.cancel_requested and not run.ctx.cancel_requested:
                    self._request_stop(run, force=False)
                breach = self._breach(mine, now)
                if breach is not None and run.stop_reason is None:
                    run.stop("ttl" if breach[0] == "expired" else "timeout", breach[1])
                if run.ctx.flush_due():
                    with contextlib.suppress(TasktrailError):
                        await run.ctx.flush()
        if self.run_tasks and now - self._last_recovery >= self.lease_timeout / 2:
            self._last_recovery = now
            await self.recover()

    async def _start_tasks(self, now: float) -> None:
        # Claims in flight count too: concurrent rounds (tick() from a test, the scheduler)
        # must not each fill the same free slots.
        busy = len(self._running) + len(self._claiming)
        room = 256 if self.max_running is None else self.max_running - busy
        if room <= 0 or not self._runners:
            return
        if self.task_ids is None:
            queue = await self.store.queued_tasks(limit=room * 4 + 16, agents=self._runners.keys())
        else:
            mine = await self.store.get_tasks(sorted(self.task_ids))
            queue = sorted(
                (t for t in mine if t.state is TaskState.PENDING and t.agent in self._runners),
                key=lambda t: (-t.priority, t.created_at),
            )
        if not queue:
            return
        chosen = startable(
            queue, now=now, active=await self.store.active_counts(),
            running_here=len(self._running) + len(self._claiming), max_running=self.max_running,
            limits=self.limits,
        )  # fmt: skip
        claims = [self._claim(task) for task in chosen]  # sent together: one commit
        errors = []
        self._claiming.update(task.id for task in chosen)  # recovery must leave these alone
        try:
            outcomes = await asyncio.gather(*claims, return_exceptions=True)
        finally:
            self._claiming.difference_update(task.id for task in chosen)
        crash_point("runtime.after_claim")
        for outcome in outcomes:
            if isinstance(outcome, VersionConflictError):
                # another worker (process, host) was quicker: look at the queue again at
                # once, rather than a poll interval later, and claim the next tasks
                self._wake.set()
                continue
            if isinstance(outcome, IllegalTransitionError | ConcurrencyLimitError):
                continue  # the task was cancelled meanwhile, or no slot is free
            if isinstance(outcome, BaseException):
                errors.append(outcome)
            else:
                self._spawn(outcome)
        if errors:
            raise errors[0]

    async def _claim(self, task: Task) -> Task:
        """Claim a pending task for this worker; a plain function runner starts at once."""
        events: list[Event] = [TaskClaimed(worker_id=self.worker_id, attempt=task.attempt + 1)]
        if not getattr(self._runners.get(task.agent), "manages_start", False):
            events.append(TaskStarted())
        try:
            return await self._append(
                task.id,
                events,
                expected_version=task.version,
                limit=self.limits.get(task.limit_key),
            )
        except StorageError:
            # Ambiguous: the claim may have committed before the error (an I/O error after
            # COMMIT). Read what happened instead of guessing; run the task if it is ours.
            current = await self.store.get_task(task.id)
            if (
                current is not None
                and current.is_active
                and current.worker_id == self.worker_id
                and current.attempt == task.attempt + 1
            ):
                return current
            raise

    # -- running one attempt --------------------------------------------------------------------

    def _spawn(self, task: Task) -> None:
        assert self._group is not None

        async def append(task_id: str, events: list[Event], reason: str | None) -> Task:
            return await self._append_owned(run, events, reason)

        run = Attempt(
            RunContext(task, append=append, clock=self.clock, cancel_grace=self.cancel_grace)
        )
        self._running[task.id] = run
        self._group.create_task(self._execute(run), name=f"tasktrail-run:{task.id}")

    def _request_stop(self, run: Attempt, force: bool) -> None:
        """Tell the runner (``ctx.cancel_requested``) and cancel its asyncio task.

        The runner receives ``CancelledError`` at its next ``await`` and may clean up
        there (a subprocess runner terminates its process group, waiting up to
        ``cancel_grace`` before killing it unless ``force``).
        """
        run.ctx.request_cancel(force=force)
        run.stop("cancel", "cancelled by request")

    async def _execute(self, run: Attempt) -> None:
        ctx = run.ctx
        task = ctx.task
        try:
            runner = self._runners.get(task.agent)
            outcome, reason = await run.run(runner, clock=self.clock, backoff=self.retry_backoff)
            if outcome is not None:
                crash_point("runtime.before_finish")
                await self._record_outcome(run, outcome, reason)
                crash_point("runtime.after_finish")
        except TasktrailError:
            # The attempt could not record its end: the task moved on without it (finished
            # elsewhere, taken over), a cancel overtook it, or the result was unstorable.
            with contextlib.suppress(TasktrailError):
                await self._settle(run)
        finally:
            self._running.pop(task.id, None)
            run.done.set()
            self._wake.set()

    async def _record_outcome(self, run: Attempt, outcome: Event, reason: str | None) -> Task:
        """Record how an attempt ended; a storage error is retried (twice) rather than
        turned into a failure at once. A retry after an error that came after COMMIT
        finds the task finished and ends in ``_settle``, so nothing is recorded twice."""
        for tries_left in (2, 1, 0):
            try:
                return await self._append_owned(run, [outcome], reason)
            except StorageError as err:
                if tries_left == 0 or isinstance(err, StoreClosedError):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _append_owned(self, run: Attempt, events: list[Event], reason: str | None) -> Task:
        """Append for a running attempt, only while the task is still this attempt's.

        The append expects the version this attempt last saw; when someone else appended
        meanwhile (a cancel request, a user), the task is re-read and the append retried
        only if this worker still owns this attempt, so a worker whose lease expired and
        whose task was taken over can never record an outcome.
        """
        expected = run.ctx.task.version
        while True:
            try:
                return await self._append(
                    run.ctx.task.id, events, reason, expected_version=expected
                )
            except VersionConflictError:
                current = await self._require(run.ctx.task.id)
                if (
                    current.is_terminal
                    or current.worker_id != self.worker_id
                    or current.attempt != run.ctx.task.attempt
                ):
                    raise IllegalTransitionError(
                        current.id,
                        current.state,
                        "continue its attempt",
                        detail=f"attempt {run.ctx.task.attempt} of {self.worker_id} was taken over",
                    ) from None
                expected = current.version

    async def _settle(self, run: Attempt) -> None:
        """After an attempt could not record its outcome, leave the task in a legal end."""
        current = await self.store.get_task(run.ctx.task.id)
        if current is None or current.is_terminal or current.worker_id != self.worker_id:
            return
        if current.attempt != run.ctx.task.attempt:
            return
        if current.cancel_requested:
            event: Event = TaskCancelled()
            reason = "cancel acknowledged"
        else:
            event = TaskFailed(error="the attempt's outcome could not be recorded")
            reason = "the runner's result or output could not be stored"
        await self._append(current.id, [event], reason, expected_version=current.version)

    # -- notifications ----------------------------------------------------------------------------

    def on_finished(self, callback: Callback, *, name: str = "default") -> None:
        """Call ``await callback(task)`` for every task that finishes, at least once.

        Deliveries follow the log from a durable checkpoint named ``name``, so a restart
        neither loses nor repeats them: a redelivery after a crash between the callback and
        the checkpoint is recognised and skipped. A callback that raises is retried every
        ``poll_interval``. Register a name in one process only.
        """
        if name in self._callbacks:
            raise InvalidInputError(f"a callback named {name!r} is already registered")
        self._callbacks[name] = callback
        if self._state == "open":
            self._start_delivery(name, callback)

    def _start_delivery(self, name: str, callback: Callback) -> None:
        assert self._group is not None
        loop = self._notifier.deliver_forever(name, callback)
        self._loops.append(self._group.create_task(loop, name=f"notify:{name}"))

    # -- recovery ----------------------------------------------------------------------------------

    async def recover(self) -> list[Task]:
        """Record a decision for every live task whose owner is dead; return those tasks.

        Runs when the manager opens and then every ``lease_timeout / 2``.
        """
        decided = await recover_orphans(
            self.store, worker_id=self.worker_id, host=self.host, now=self.clock.time(),
            lease_timeout=self.lease_timeout, running_here=self._running.keys() | self._claiming,
        )  # fmt: skip
        for task in decided:
            if task.is_terminal:
                self._waiters.finished(task)
        if decided:
            self._wake.set()
        return decided
