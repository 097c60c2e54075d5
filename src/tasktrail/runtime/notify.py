"""Notifications that a task finished: to callbacks, and to the parent task's log.

Both follow the log from durable checkpoints, so a restart neither loses a notification
nor (thanks to the ``deliveries`` table and idempotent event ids) repeats it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from tasktrail.errors import EventIdConflictError, IllegalTransitionError, TaskNotFoundError
from tasktrail.events import ChildFinished, NewEvent
from tasktrail.projection import Task
from tasktrail.runtime.clock import Clock
from tasktrail.store import EventStore

__all__ = ["Callback", "Notifier"]

Callback = Callable[[Task], Awaitable[None]]
_FINAL_EVENTS = frozenset({"task.completed", "task.failed", "task.cancelled"})


class Notifier:
    """Follows the log and announces every finished task."""

    def __init__(self, store: EventStore, clock: Clock, poll_interval: float) -> None:
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval

    async def _finished_tasks(self, subscriber: str) -> AsyncIterator[tuple[str, Task]]:
        """(event id, task as that event left it) for every final event, following the log."""
        async for event in self.store.subscribe(subscriber, poll_interval=self.poll_interval):
            if event.type in _FINAL_EVENTS:
                # A final state is absorbing: the task now is the task as that event left it.
                task = await self.store.get_task(event.stream_id)
                if task is not None:
                    yield event.event_id, task

    async def deliver_forever(self, name: str, callback: Callback) -> None:
        """Hand every finished task to ``callback``, at least once and de-duplicated."""
        subscriber = f"notify:{name}"
        async for event_id, task in self._finished_tasks(subscriber):
            if await self.store.was_delivered(subscriber, event_id):
                continue
            while True:
                try:
                    await callback(task)
                    break
                except Exception:
                    await self.clock.sleep(self.poll_interval)
            await self.store.mark_delivered(subscriber, event_id)

    async def notify_parents_forever(self) -> None:
        """Tell each live parent that its child finished, once, as a log event.

        The event id derives from the child's final event, so several processes (or a
        restart) appending the same notification write it once.
        """
        async for event_id, child in self._finished_tasks("notify:parents"):
            if child.parent_id is None:
                continue
            note = ChildFinished(
                child_id=child.id, state=child.state.value, result=child.result, error=child.error
            )
            new = NewEvent(
                note, actor="system", correlation_id=child.id, event_id=f"child:{event_id}"
            )
            with contextlib.suppress(
                IllegalTransitionError, TaskNotFoundError, EventIdConflictError
            ):
                await self.store.append(child.parent_id, [new])
