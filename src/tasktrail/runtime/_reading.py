"""The reading half of a client: tasks, listings, history and the chain, from the store."""

from __future__ import annotations

from datetime import datetime

from tasktrail.errors import TaskNotFoundError
from tasktrail.events import RecordedEvent
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime.clock import Clock
from tasktrail.store import EventStore, VerifyReport

__all__ = ["Reading"]


class Reading:
    """Reads through ``store``; the client supplies the store, the clock and its checks."""

    store: EventStore
    clock: Clock
    retention: float | None

    def _check_open(self) -> None:
        raise NotImplementedError  # pragma: no cover  # the client's

    async def get_task(self, task_id: str) -> Task | None:
        """The task, or ``None`` when there is no task with this id."""
        self._check_open()
        return await self.store.get_task(task_id)

    async def _require(self, task_id: str) -> Task:
        task = await self.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def list_tasks(
        self,
        state: TaskState | str | tuple[TaskState | str, ...] | list[TaskState | str] | None = None,
        *,
        agent: str | list[str] | tuple[str, ...] | None = None,
        parent_id: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first; finished ones within retention.

        ``state`` and ``agent`` may be one value or several; ``since`` (inclusive) and
        ``until`` (exclusive) bound the creation time: aware datetimes or unix seconds.
        """
        self._check_open()
        horizon = None if self.retention is None else self.clock.time() - self.retention
        return await self.store.list_tasks(
            state=state, agent=agent, parent_id=parent_id, since=since, until=until,
            finished_since=horizon, limit=limit, newest_first=newest_first,
        )  # fmt: skip

    async def children(self, task_id: str) -> list[Task]:
        """The tasks launched with ``parent_id=task_id``, oldest first, as they are now
        (finished ones with their final state, whatever became of the parent)."""
        await self._require(task_id)
        return await self.store.list_tasks(parent_id=task_id)

    async def reruns(self, task_id: str) -> list[Task]:
        """The reruns of ``task_id`` (tasks whose ``rerun_of`` is it), oldest first."""
        await self._require(task_id)
        return await self.store.list_tasks(rerun_of=task_id)

    async def history(self, task_id: str) -> list[RecordedEvent]:
        """Every event of the task, in order."""
        self._check_open()
        return await self.store.history(task_id)

    async def state_at(
        self, task_id: str, *, version: int | None = None, at: datetime | float | None = None
    ) -> Task | None:
        """The task as it was at ``version`` or time ``at`` (see the store's ``state_at``)."""
        self._check_open()
        return await self.store.state_at(task_id, version=version, at=at)

    async def verify(self) -> VerifyReport:
        """Recompute the log's hash chain (see the store's ``verify``)."""
        self._check_open()
        return await self.store.verify()
