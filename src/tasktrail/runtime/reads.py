"""Reads of single tasks asked for at the same moment, answered by one query.

``wait()`` reads its task once after it starts listening. Ten thousand callers waiting at
once would make ten thousand queries, each a trip to the database thread; a
:class:`ReadBatcher` collects the reads asked for before the event loop next gets to it and
answers them all with one ``get_tasks`` (in chunks of ids).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tasktrail.projection import Task

__all__ = ["ReadBatcher"]

Spawn = Callable[[Coroutine[Any, Any, None]], object]


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
