"""``wait()``: the callers waiting in one client for tasks to finish, and how they learn.

A finish recorded through the client answers its waiters at once (:class:`Waiters`). A
caller reads its task once, after it started listening; the reads of every caller that
starts waiting at the same moment share one query (:class:`ReadBatcher`: ten thousand
callers would otherwise make ten thousand trips to the database thread). Finishes recorded
by other processes are found by :class:`Watch`, one query for every waited-for task, when
another process commits and every ``poll_interval`` at the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from tasktrail.errors import StoreClosedError, TaskNotFoundError, TasktrailError, WaitTimeoutError
from tasktrail.projection import Task
from tasktrail.runtime._aio import first_of
from tasktrail.runtime.clock import Clock
from tasktrail.store import EventStore

__all__ = ["ReadBatcher", "Waiters", "Watch"]

# The logger keeps the name users configure (the client's); this module is private.
_log = logging.getLogger("tasktrail.runtime.client")

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Waiters:
    """Futures of the callers of ``wait()``, by task id; any number per task."""

    def __init__(self) -> None:
        self._by_task: dict[str, list[asyncio.Future[Task]]] = {}

    @contextlib.contextmanager
    def listen(self, task_id: str) -> Iterator[asyncio.Future[Task]]:
        """A future answered with the task when it finishes, for the ``with`` block."""
        finished: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        waiters = self._by_task.setdefault(task_id, [])
        waiters.append(finished)
        try:
            yield finished
        finally:
            waiters.remove(finished)
            if not waiters:
                del self._by_task[task_id]

    def task_ids(self) -> list[str]:
        """The tasks someone waits for."""
        return list(self._by_task)

    def finished(self, task: Task) -> None:
        """Answer the waiters of a task that just finished."""
        for waiter in self._by_task.get(task.id, ()):
            if not waiter.done():
                waiter.set_result(task)

    def fail_all(self, error: BaseException) -> None:
        """Answer every waiter with ``error`` (the manager is closing)."""
        for waiters in self._by_task.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)


class ReadBatcher:
    """Batches ``read(task_id)`` calls into ``read_many(ids)`` calls."""

    def __init__(self, read_many: Callable[[list[str]], Awaitable[list[Task]]]) -> None:
        self._read_many = read_many
        self._pending: dict[str, list[asyncio.Future[Task | None]]] = {}

    def read(self, task_id: str, spawn: Spawn) -> asyncio.Future[Task | None]:
        """A future of the task (``None`` if there is none); ``spawn`` runs the batch."""
        future: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        if not self._pending:
            spawn(self._flush())
        self._pending.setdefault(task_id, []).append(future)
        return future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        futures = [future for waiting in batch.values() for future in waiting]
        try:
            found = {task.id: task for task in await self._read_many(list(batch))}
        except Exception as error:  # each reader gets it; the batch task ends quietly
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        for task_id, waiting in batch.items():
            for future in waiting:
                if not future.done():
                    future.set_result(found.get(task_id))


class Watch:
    """``wait()`` for one client: listen, read once, then wait for the finish."""

    def __init__(self, store: EventStore, clock: Clock, poll_interval: float) -> None:
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval
        self.waiters = Waiters()
        self._reads = ReadBatcher(store.get_tasks)

    async def wait(self, task_id: str, timeout: float | None, spawn: Spawn) -> Task:
        """The task once it is finished; WaitTimeoutError after ``timeout`` seconds."""
        with self.waiters.listen(task_id) as finished:
            task = await self._reads.read(task_id, spawn)  # after listening: no finish missed
            if task is None:
                raise TaskNotFoundError(task_id)
            if task.is_terminal:
                return task
            if timeout is None:
                return await finished
            await first_of(finished, self.clock.sleep(timeout))
            if finished.done() and not finished.cancelled():
                return finished.result()
            raise WaitTimeoutError(task_id, timeout)

    async def forever(self) -> None:
        """Look up every waited-for task at once (finishes recorded by other processes)
        when another process commits, and every ``poll_interval`` at the latest."""
        while True:
            await first_of(self._changed(), self.clock.sleep(self.poll_interval))
            if waited := self.waiters.task_ids():
                try:
                    for task in await self.store.get_tasks(waited):
                        if task.is_terminal:
                            self.waiters.finished(task)
                except StoreClosedError:
                    return
                except TasktrailError as err:
                    _log.warning("reading %d waited-for tasks failed: %s", len(waited), err)

    async def _changed(self) -> None:
        """Return when another process may have committed, or after ``poll_interval``; a
        store that cannot tell (busy, damaged) is simply waited out."""
        try:
            await self.store.wait_for_change(self.poll_interval)
        except TasktrailError:  # never return at once: the loop would spin
            await self.clock.sleep(self.poll_interval)
