"""``TaskManager``: the client that also runs tasks, with the seed managers' API.

Everything the manager knows is in the log: slots are counted from the projection, a
claim is made inside the store's write transaction, a cancel is a request event and its
acknowledgement, and a restart (or another process) finds every task where the log left
it. The reading and writing half is :class:`~tasktrail.AsyncClient`; the running half is
:class:`~tasktrail.runtime.worker.Worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Collection, Mapping
from typing import Any

from tasktrail.errors import InvalidInputError
from tasktrail.events import TaskCreated
from tasktrail.projection import Task
from tasktrail.runtime._aio import first_of
from tasktrail.runtime._settings import WorkerSettings
from tasktrail.runtime.client import AsyncClient
from tasktrail.runtime.clock import Clock
from tasktrail.runtime.context import RunContext, Runner
from tasktrail.runtime.registry import Registry
from tasktrail.runtime.worker import Worker
from tasktrail.store import EventStore

__all__ = ["TaskManager"]

_log = logging.getLogger(__name__)


class TaskManager(AsyncClient):
    """Runs background tasks durably. Open with ``async with TaskManager(path) as tm:``.

    Everything :class:`~tasktrail.AsyncClient` does (launch, wait, cancel, inspect), and
    it runs the tasks of the agents registered on it (``tm.register(agent, fn)``).

    Args:
        database: a SQLite file path (created if missing), a ``postgresql://`` URL, or an
            unopened store (``SQLiteEventStore(path, busy_timeout=...)``) to set its options.
        max_running: tasks running at once in this manager (``None``: unlimited).
        limits: per concurrency key (the task's ``concurrency_key``, else its agent), the
            most tasks of that key in ``starting``/``running`` across every process.
        poll_interval: seconds between scheduler rounds and looks at the database when
            nothing wakes the manager sooner (a launch here, a finished attempt, a commit of
            another process all do).
        task_ttl: default seconds a task launched here may live, from creation, before a
            worker fails it (``None``, the default: no limit). Recorded in the task.
        run_timeout: default seconds one attempt of a task launched here may run.
        queue_timeout: default seconds a task launched here may wait for its first start.
        start_timeout: seconds a runner may take to report its start (a session created, a
            process spawned) before the attempt is stopped and retried or failed.
        retention: seconds finished tasks stay in ``list_tasks`` (``None``: forever).
        max_attempts: default attempts per task (retries = attempts - 1).
        retry_backoff: seconds before the second attempt; doubled for each further one.
        cancel_grace: seconds a runner has to stop after a cancel (or a timeout, or
            ``close()``) before it is abandoned: its task is recorded as the stop decided,
            its slot is freed, and the coroutine is left behind with a warning.
        lease_timeout: seconds without a change of another worker's heartbeat (by this
            manager's monotonic clock) after which it counts as dead and its tasks are
            recovered.
        worker_id: this manager's id in the log (default: host, pid and a random suffix).
        run_tasks: ``False`` for a manager that only launches and inspects (then it is an
            :class:`~tasktrail.AsyncClient`: no worker row, no scheduler, no deadlines).
        task_ids: start only these tasks (a foreground runner for tasks it launched
            itself, like ``tasktrail run``); ``None`` (default): any pending task of a
            registered agent.
        actor: who writes, when a call names no ``actor``.
        clock: the time source (:class:`~tasktrail.testing.FakeClock` in tests).
    """

    def __init__(
        self,
        database: str | os.PathLike[str] | EventStore,
        *,
        max_running: int | None = 10,
        limits: Mapping[str, int] | None = None,
        poll_interval: float = 2.0,
        task_ttl: float | None = None,
        run_timeout: float | None = None,
        queue_timeout: float | None = None,
        start_timeout: float | None = 60.0,
        retention: float | None = None,
        max_attempts: int = 1,
        retry_backoff: float = 1.0,
        cancel_grace: float = 5.0,
        lease_timeout: float = 30.0,
        worker_id: str | None = None,
        run_tasks: bool = True,
        task_ids: Collection[str] | None = None,
        actor: str = "user",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            database, poll_interval=poll_interval, retention=retention,
            max_attempts=max_attempts, task_ttl=task_ttl, queue_timeout=queue_timeout,
            run_timeout=run_timeout, actor=actor, clock=clock,
        )  # fmt: skip
        self._worker: Worker | None = None
        if run_tasks:
            settings = WorkerSettings(
                max_running=max_running, limits=limits or {}, poll_interval=self.poll_interval,
                lease_timeout=lease_timeout, cancel_grace=cancel_grace,
                start_timeout=start_timeout, retry_backoff=retry_backoff,
            )  # fmt: skip
            self._worker = Worker(
                self.store, self.clock, settings, on_written=self._heard_write,
                worker_id=worker_id, task_ids=task_ids,
            )  # fmt: skip

    @property
    def _what(self) -> str:
        return "manager"

    @property
    def worker(self) -> Worker:
        """The worker part (raises for a manager made with ``run_tasks=False``)."""
        if self._worker is None:
            raise InvalidInputError("this manager does not run tasks (run_tasks=False)")
        return self._worker

    @property
    def worker_id(self) -> str | None:
        """This manager's worker id in the log (``None`` when it runs no tasks)."""
        return None if self._worker is None else self._worker.worker_id

    # -- opening and closing -----------------------------------------------------------------

    async def _opened(self) -> None:
        if self._worker is not None:
            assert self._group is not None
            await self._worker.start(self._group)

    async def _closing(self) -> None:
        if self._worker is not None:
            await self._worker.stop()

    async def _closed(self) -> None:
        if self._worker is not None:
            await self._worker.sign_off()

    async def close(self) -> None:
        """Stop: running attempts are cancelled and re-queued, never left ``running``.

        Bounded: each runner gets ``cancel_grace`` seconds to stop, then is abandoned.
        Closing twice is harmless.
        """
        await super().close()

    # -- running tasks ------------------------------------------------------------------------

    def register(self, agent: str, runner: Runner | Callable[[RunContext], Any]) -> None:
        """Run tasks of ``agent`` with ``runner`` in this manager: ``async def fn(ctx)``, a
        plain ``def fn(ctx)`` (run in a worker thread), or a runner object such as
        :class:`~tasktrail.SubprocessRunner`. Anything else is refused here, not when a
        task runs."""
        self.worker.register(agent, runner)

    def include(self, registry: Registry) -> None:
        """Run every agent of ``registry`` (a :class:`~tasktrail.Registry`) here."""
        for agent, runner in registry.runners.items():
            self.register(agent, runner)

    async def serve(self) -> None:
        """Run tasks until cancelled, or until SIGINT or SIGTERM (then close gracefully:
        running attempts are stopped and re-queued, as ``close()`` does). Raises the error
        that stopped the worker when no retry can mend it (a damaged database).

        ``async with TaskManager(db) as tm: tm.register(...); await tm.serve()``.
        """
        self._check_open()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(number, stop.set)
                installed.append(number)
        worker = self.worker
        try:
            _log.info("worker %s serving %s", self.worker_id, ", ".join(sorted(worker.runners)))
            await first_of(stop.wait(), worker.failed.wait())
            _log.info("worker %s stopping", self.worker_id)
        finally:
            for number in installed:
                loop.remove_signal_handler(number)
        if worker.failure is not None:
            raise worker.failure

    async def tick(self) -> None:
        """One scheduler round (see :meth:`Worker.tick`); for tests with a fake clock."""
        self._check_open()
        await self.worker.tick()

    async def recover(self) -> list[Task]:
        """Record a decision for every live task whose owner is dead; return those tasks.

        Runs when the manager opens and then every ``lease_timeout / 2``.
        """
        self._check_open()
        return await self.worker.recover()

    # -- hooks of the client -------------------------------------------------------------------

    async def _launch(
        self, created: TaskCreated, task_id: str | None, *, actor: str | None, reason: str | None
    ) -> Task:
        worker = self._worker
        if worker is None or created.agent not in worker.runners or worker.room() <= 0:
            return await super()._launch(created, task_id, actor=actor, reason=reason)
        # The claim goes in the same commit as the creation: one commit to start a task.
        worker.claim_soon()
        return await super()._launch(created, task_id, actor=actor, reason=reason)

    def _written(self, task: Task) -> None:
        super()._written(task)
        if self._worker is not None:
            self._worker.wake()

    def _heard_write(self, task: Task) -> None:
        """A write of the worker committed."""
        super()._written(task)

    async def _cancelled(self, task: Task, force: bool) -> Task:
        if self._worker is None:
            return task
        return await self._worker.cancelled(task, force)

    async def _finished_outside(self, task: Task) -> None:
        if self._worker is not None:
            self._worker.finished_outside(task)
