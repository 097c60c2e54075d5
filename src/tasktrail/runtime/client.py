"""``AsyncClient``: launch, inspect, wait for and cancel tasks, without running any.

A web app that only queues work, a script that waits for a result, the command line's
reading commands: none of them needs a scheduler, a heartbeat or a worker row. The client
is the part of :class:`~tasktrail.TaskManager` they need, and the manager is a client that
also runs tasks (see :mod:`tasktrail.runtime.worker`).

Every write says who made it (``actor``) and why (``reason``), and every :class:`Task` a
call returns is the fold of the log at the version the call wrote.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, Literal, Self

from tasktrail.errors import (
    IllegalTransitionError,
    InvalidInputError,
    StoreClosedError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    VersionConflictError,
    WaitTimeoutError,
)
from tasktrail.events import (
    Event,
    NewEvent,
    OutputAppended,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
)
from tasktrail.ids import check_actor, check_task_id, new_task_id
from tasktrail.lifecycle import LIVE_STATES, TaskState
from tasktrail.projection import Task
from tasktrail.runtime._launch import (
    SETTING,
    Setting,
    cancel_events,
    created,
    finish_events,
    rerun_of,
)
from tasktrail.runtime._notify import Callback, Notifier
from tasktrail.runtime._reading import Reading
from tasktrail.runtime._settings import count, optional_seconds, seconds
from tasktrail.runtime._waiting import Watch
from tasktrail.runtime.clock import Clock, SystemClock
from tasktrail.store import EventStore, open_store

__all__ = ["AsyncClient"]


class AsyncClient(Reading):
    """Launches, inspects, waits for and cancels tasks; never runs them (a worker does).

    Open with ``async with AsyncClient(database) as client:``.

    Args:
        database: a SQLite file path (created if missing), a ``postgresql://`` URL, or an
            unopened store (``SQLiteEventStore(path, busy_timeout=...)``) to set its options.
        poll_interval: seconds between looks for finishes recorded by other processes,
            for ``wait()`` (a commit of another process is noticed sooner: SQLite within
            25 ms, PostgreSQL at its NOTIFY).
        retention: seconds finished tasks stay in ``list_tasks`` (``None``: forever). The
            log keeps them regardless.
        max_attempts: default attempts of a task launched here (retries = attempts - 1).
        task_ttl: default seconds a task launched here may live before a worker fails it
            (``None``: no limit). Recorded in the task at launch.
        queue_timeout: default seconds a task launched here may wait for its first start.
        run_timeout: default seconds one attempt of a task launched here may run.
        actor: who writes, when a call names no ``actor`` (the log's ``actor`` column).
        clock: the time source (:class:`~tasktrail.testing.FakeClock` in tests).
    """

    def __init__(
        self,
        database: str | os.PathLike[str] | EventStore,
        *,
        poll_interval: float = 2.0,
        retention: float | None = None,
        max_attempts: int = 1,
        task_ttl: float | None = None,
        queue_timeout: float | None = None,
        run_timeout: float | None = None,
        actor: str = "user",
        clock: Clock | None = None,
    ) -> None:
        self.poll_interval = seconds("poll_interval", poll_interval, positive=True)
        self.retention = optional_seconds("retention", retention)
        self.max_attempts = count("max_attempts", max_attempts)
        self.task_ttl = optional_seconds("task_ttl", task_ttl, positive=True)
        self.queue_timeout = optional_seconds("queue_timeout", queue_timeout, positive=True)
        self.run_timeout = optional_seconds("run_timeout", run_timeout, positive=True)
        self.actor = check_actor(actor)
        self.clock: Clock = clock or SystemClock()
        if isinstance(database, str | os.PathLike):
            self.store: EventStore = open_store(database, clock=self.clock.time)
        else:  # a store made by the caller (its own options: busy_timeout, pool_size...)
            self.store = database
        self._group: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._watch = Watch(self.store, self.clock, self.poll_interval)
        self._callbacks: dict[str, Callback] = {}
        self._notifier = Notifier(self.store, self.clock, self.poll_interval)
        self._state: Literal["new", "open", "closed"] = "new"

    # -- opening and closing ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise StoreClosedError(self._what)
        await self.store.open()
        try:
            self._group = asyncio.TaskGroup()
            await self._group.__aenter__()
            self._state = "open"
            self._spawn_loop(self._watch.forever(), "watch")
            await self._opened()
            for name, callback in self._callbacks.items():
                self._spawn_loop(self._notifier.deliver_forever(name, callback), f"notify:{name}")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def _what(self) -> str:
        return "client"

    async def _opened(self) -> None:
        """More to start once the store is open (a worker: its loops)."""

    def _spawn_loop(self, loop: Awaitable[None], name: str) -> None:
        assert self._group is not None
        self._loops.append(self._group.create_task(loop, name=f"tasktrail-{name}"))  # type: ignore[arg-type]

    async def close(self) -> None:
        """Stop waiting and close the store. Closing twice is harmless."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        self._watch.waiters.fail_all(StoreClosedError(self._what))
        try:
            for loop in self._loops:
                loop.cancel()
            await self._closing()
            assert self._group is not None
            await self._group.__aexit__(None, None, None)
            await self._closed()
        finally:
            await self.store.close()

    async def _closing(self) -> None:
        """Stop what runs before the loops end (a worker: its attempts)."""

    async def _closed(self) -> None:
        """Last writes once every loop ended (a worker: re-queue, sign off)."""

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreClosedError(self._what)

    # -- launching ------------------------------------------------------------------------------

    async def launch(
        self,
        agent: str,
        prompt: str = "",
        *,
        input: Any = None,
        description: str = "",
        parent_id: str | None = None,
        task_id: str | None = None,
        session_id: str | None = None,
        concurrency_key: str | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        not_before: datetime | float | None = None,
        task_ttl: float | Setting | None = SETTING,
        queue_timeout: float | Setting | None = SETTING,
        run_timeout: float | Setting | None = SETTING,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Create a task and return it at once, ``pending``; a worker starts it later.

        ``input`` is any JSON value (refused when JSON would not give it back unchanged).
        ``not_before`` delays the start: an aware datetime, or seconds from now. The
        deadlines (``task_ttl``, ``queue_timeout``, ``run_timeout``; seconds, ``None``
        for none) default to this client's settings and are recorded in the task: only
        workers enforce them. Raises TaskExistsError when ``task_id`` is taken (the
        existing task is untouched) and TaskNotFoundError when ``parent_id`` names no task.
        """
        self._check_open()
        payload = created(
            self, self.clock.time(), agent, prompt, input=input, description=description,
            parent_id=parent_id, session_id=session_id, concurrency_key=concurrency_key,
            priority=priority, max_attempts=max_attempts, metadata=metadata,
            not_before=not_before, task_ttl=task_ttl, queue_timeout=queue_timeout,
            run_timeout=run_timeout,
        )  # fmt: skip
        return await self._launch(payload, task_id, actor=actor, reason=reason)

    async def _launch(
        self, payload: TaskCreated, task_id: str | None, *, actor: str | None, reason: str | None
    ) -> Task:
        new_id = new_task_id() if task_id is None else check_task_id(task_id)
        if payload.parent_id is not None and await self.store.get_task(payload.parent_id) is None:
            raise TaskNotFoundError(payload.parent_id)
        return await self._append(
            new_id, [payload], reason, actor=self._actor(actor), expected_version=0,
            correlation_id=payload.parent_id,
        )  # fmt: skip

    async def rerun(
        self, task_id: str, *, actor: str | None = None, reason: str | None = None
    ) -> Task:
        """Launch a new task with the agent, prompt, input and options of ``task_id``
        (any state), recorded as its rerun (``rerun_of``); return it, ``pending``."""
        self._check_open()
        original = await self._require(task_id)
        parent = original.parent_id
        exists = parent is None or await self.store.get_task(parent) is not None
        payload = rerun_of(original, parent_exists=exists)
        return await self._launch(
            payload, None, actor=actor, reason=reason or f"rerun of {original.id}"
        )

    # -- reading (and :class:`~tasktrail.runtime._reading.Reading`) ----------------------

    async def get_output(
        self, task_id: str, *, wait: bool = False, timeout: float | None = None
    ) -> str:
        """The task's output so far (or, with ``wait``, once it finished)."""
        if wait:
            await self.wait(task_id, timeout=timeout)
        events = await self.history(task_id)
        return "".join(e.payload.text for e in events if isinstance(e.payload, OutputAppended))

    # -- waiting -----------------------------------------------------------------------------

    async def wait(self, task_id: str, *, timeout: float | None = None) -> Task:
        """Wait until the task is finished and return it.

        Any number of callers may wait, in any process: a finish recorded through this
        client wakes its waiters at once, one recorded elsewhere as soon as its commit is
        noticed (and at the latest within ``poll_interval``; one query for all waiters). A
        cancelled task is returned like any other finished task. On timeout raises
        WaitTimeoutError (a TimeoutError); when the client closes first, StoreClosedError.
        """
        if timeout is not None:
            timeout = seconds("timeout", timeout)
        self._check_open()
        assert self._group is not None
        return await self._watch.wait(check_task_id(task_id), timeout, self._group.create_task)

    async def run(
        self, agent: str, prompt: str = "", *, timeout: float | None = None, **options: Any
    ) -> Any:
        """Launch a task, wait for it, return its result.

        Raises TaskFailedError (with the runner's error), TaskCancelledError, or
        WaitTimeoutError after cancelling the task when ``timeout`` runs out.
        """
        task = await self.launch(agent, prompt, **options)
        try:
            done = await self.wait(task.id, timeout=timeout)
        except WaitTimeoutError:
            await self.cancel(task.id, force=True, reason=f"run() timed out after {timeout:g} s")
            raise
        if done.state is TaskState.COMPLETED:
            return done.result
        if done.state is TaskState.FAILED:
            raise TaskFailedError(done.id, done.error, done.reason)
        raise TaskCancelledError(done.id, done.reason)

    def on_finished(self, callback: Callback, *, name: str = "default") -> None:
        """Call ``await callback(task)`` for every task that finishes, at least once.

        Deliveries follow the log from a durable checkpoint named ``name``, so a restart
        neither loses nor repeats them: a redelivery after a crash between the callback and
        the checkpoint is recognised and skipped. A callback that raises is called again
        after a pause that doubles each time; after five calls that delivery is given up
        (logged, with the task id) and the next goes ahead. Register a name in one process.
        A client that runs no task (a web app) may register callbacks too.
        """
        if name in self._callbacks:
            raise InvalidInputError(f"a callback named {name!r} is already registered")
        if not callable(callback):
            raise InvalidInputError(f"callback {callback!r} is not callable")
        self._callbacks[name] = callback
        if self._state == "open":
            self._spawn_loop(self._notifier.deliver_forever(name, callback), f"notify:{name}")

    # -- writes from outside -----------------------------------------------------------------

    def _actor(self, actor: str | None) -> str:
        return self.actor if actor is None else check_actor(actor)

    async def _append(
        self,
        task_id: str,
        events: list[Event],
        reason: str | None,
        *,
        actor: str,
        expected_version: int | None = None,
        correlation_id: str | None = None,
    ) -> Task:
        result = await self.store.append(
            task_id,
            [
                NewEvent(e, actor=actor, reason=reason, correlation_id=correlation_id)
                for e in events
            ],
            expected_version=expected_version,
        )
        self._written(result.task)
        return result.task

    def _written(self, task: Task) -> None:
        """A write through this client committed (a worker hears of it too)."""
        if task.is_terminal:
            self._watch.waiters.finished(task)

    async def complete_task(
        self,
        task_id: str,
        result: Any = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Mark a task completed from outside (its runner, if one runs, is stopped).

        A pending or starting task is claimed and started in the same append, so its log
        still shows a legal path. A finished task raises IllegalTransitionError.
        """
        return await self._finish_from_outside(
            task_id, TaskCompleted(result=result), actor, reason or "completed from outside"
        )

    async def fail_task(
        self,
        task_id: str,
        error: str | BaseException,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Mark a task failed from outside. A finished task raises IllegalTransitionError."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return await self._finish_from_outside(
            task_id, TaskFailed(error=text), actor, reason or "failed from outside"
        )

    async def _finish_from_outside(
        self, task_id: str, outcome: Event, actor: str | None, reason: str
    ) -> Task:
        self._check_open()
        who = self._actor(actor)
        while True:
            task = await self._require(task_id)
            events = finish_events(task, outcome)
            try:
                done = await self._append(
                    task_id, events, reason, actor=who, expected_version=task.version
                )
            except VersionConflictError:
                continue
            await self._finished_outside(done)
            return done

    async def _finished_outside(self, task: Task) -> None:
        """A task was finished from outside (a worker stops its runner)."""

    async def cancel(
        self,
        task_id: str,
        *,
        force: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Cancel a task and all its descendants.

        A pending task is cancelled at once; a starting or running one once its runner
        stopped (its worker gives it ``cancel_grace``, then abandons it), or at once with
        ``force``. A finished task is returned unchanged. Returns the task as the cancel
        left it.
        """
        self._check_open()
        who = self._actor(actor)
        why = reason or "cancel requested"
        task = await self._require(task_id)
        result = await self._cancel_one(task, force, who, why)
        pending = [task_id]
        while pending:
            parent = pending.pop()
            for child in await self.store.list_tasks(parent_id=parent):
                pending.append(child.id)
                await self._cancel_one(child, force, who, f"parent {task_id} cancelled: {why}")
        return result

    async def cancel_all(
        self, *, force: bool = False, actor: str | None = None, reason: str | None = None
    ) -> list[Task]:
        """Cancel every unfinished task; returns them as the cancel left them."""
        self._check_open()
        who = self._actor(actor)
        why = reason or "cancel of every unfinished task"
        live = await self.store.list_tasks(state=tuple(LIVE_STATES))
        return list(await asyncio.gather(*(self._cancel_one(t, force, who, why) for t in live)))

    async def _cancel_one(self, task: Task, force: bool, actor: str, reason: str) -> Task:
        while not task.is_terminal:
            events = cancel_events(task, force=force)
            if events is None:
                break  # already requested; the runner is stopping
            try:
                task = await self._append(
                    task.id, events, reason, actor=actor, expected_version=task.version
                )
            except VersionConflictError:
                task = await self._require(task.id)
                continue
            except IllegalTransitionError:
                task = await self._require(task.id)
                if not task.is_terminal:
                    raise
            break
        return await self._cancelled(task, force)

    async def _cancelled(self, task: Task, force: bool) -> Task:
        """A cancel was recorded (a worker stops the task's runner; returns the task)."""
        return task
