"""The callers waiting in one manager for tasks to finish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from tasktrail.projection import Task

__all__ = ["Waiters"]


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
