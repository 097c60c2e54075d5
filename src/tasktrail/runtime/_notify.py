"""Notifications that a task finished: to callbacks, and to the parent task's log.

Both follow the log from durable checkpoints, so a restart neither loses a notification
nor (thanks to the ``deliveries`` table and idempotent event ids) repeats it. Neither ever
stops the worker: a storage error is logged and retried after a pause, and a callback that
keeps raising gives up on that one delivery (logged) and goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeVar

from tasktrail.errors import (
    EventIdConflictError,
    IllegalTransitionError,
    StorageError,
    StoreClosedError,
    TaskNotFoundError,
)
from tasktrail.events import (
    ChildFinished,
    NewEvent,
)
from tasktrail.projection import Task
from tasktrail.runtime.clock import Clock
from tasktrail.store import EventStore

__all__ = ["CALLBACK_TRIES", "CHECKPOINT_EVERY", "Callback", "Notifier"]

_log = logging.getLogger("tasktrail.runtime.notify")  # a documented name
T = TypeVar("T")

Callback = Callable[[Task], Awaitable[None]]
CHECKPOINT_EVERY: Final = 1.0
"""Seconds between two saves of a notifier's checkpoint (each is a durable write)."""
CALLBACK_TRIES: Final = 5
"""Calls of a callback for one finished task before that delivery is given up."""
_MAX_PAUSE: Final = 60.0
_STRETCH: Final = 10_000
"""Sequence numbers looked at by one read of the log."""


class Notifier:
    """Follows the log and announces every finished task."""

    def __init__(self, store: EventStore, clock: Clock, poll_interval: float) -> None:
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval

    async def _finished_tasks(
        self, subscriber: str, *, with_parent: bool = False
    ) -> AsyncIterator[tuple[str, Task]]:
        """(event id, task as that event left it) for every final event, following the log
        from the subscriber's checkpoint.

        The finishes are read with their tasks in one query per stretch of the log, never
        by decoding the log. What was handed out counts as handled once the next stretch is
        read; the checkpoint is saved at most every :data:`CHECKPOINT_EVERY` seconds (a
        restart re-reads at most that much, and both consumers skip what they did). A
        storage error (a database busy past its timeout) pauses and reads again.
        """
        position = await self._retrying(
            functools.partial(self.store.load_checkpoint, subscriber), f"{subscriber}: a read"
        )
        saved, saved_at, failures = position, self.clock.monotonic(), 0
        while True:
            # Listen before reading: a commit during the read or while its finishes are
            # handled wakes the next read at once, and a read never runs only to learn that
            # nothing changed (one read per commit, not two).
            committed = asyncio.ensure_future(self.store.wait_for_commit(self.poll_interval))
            try:
                await asyncio.sleep(0)  # the waiter is listening before the read starts
                if position != saved and self.clock.monotonic() - saved_at >= CHECKPOINT_EVERY:
                    await self.store.save_checkpoint(subscriber, position)
                    saved, saved_at = position, self.clock.monotonic()
                found, upto = await self.store.finished_after(
                    position, limit=_STRETCH, with_parent=with_parent
                )
                failures = 0
                for event_id, task in found:
                    yield event_id, task
                stretch, position = upto - position, upto
                if stretch < _STRETCH:  # else more may be waiting: read on at once
                    await committed
            except StoreClosedError:
                return
            except StorageError as err:
                failures += 1
                pause = min(self.poll_interval * 2 ** min(failures, 10), _MAX_PAUSE)
                _log.warning(
                    "%s: reading the log failed (%s); again in %g s", subscriber, err, pause
                )
                await self.clock.sleep(pause)
            finally:
                committed.cancel()

    async def deliver_forever(self, name: str, callback: Callback) -> None:
        """Hand every finished task to ``callback``, at least once and de-duplicated.

        A callback that raises is called again after ``poll_interval``, doubling the pause
        each time; after :data:`CALLBACK_TRIES` calls that delivery is given up (logged as
        an error with the task id) and the next one goes ahead.
        """
        subscriber = f"notify:{name}"
        async for event_id, task in self._finished_tasks(subscriber):
            delivered = await self._retrying(
                functools.partial(self.store.was_delivered, subscriber, event_id),
                f"{subscriber}: a read",
            )
            if delivered:
                continue
            for tries in range(1, CALLBACK_TRIES + 1):
                try:
                    await callback(task)
                    break
                except Exception as err:
                    if tries == CALLBACK_TRIES:
                        _log.error(
                            "callback %r gave up on task %s (%s) after %d calls: %s: %s",
                            name, task.id, task.state.value, tries, type(err).__name__, err,
                        )  # fmt: skip
                        break
                    pause = min(self.poll_interval * 2 ** (tries - 1), _MAX_PAUSE)
                    _log.warning(
                        "callback %r failed on task %s (call %d of %d): %s: %s; again in %g s",
                        name, task.id, tries, CALLBACK_TRIES, type(err).__name__, err, pause,
                    )  # fmt: skip
                    await self.clock.sleep(pause)
            await self._retrying(
                functools.partial(self.store.mark_delivered, subscriber, event_id),
                f"{subscriber}: a write",
            )

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """``await operation()``; a storage error is logged and tried again after a pause."""
        failures = 0
        while True:
            try:
                return await operation()
            except StoreClosedError:
                raise
            except StorageError as err:
                failures += 1
                pause = min(self.poll_interval * 2 ** min(failures, 10), _MAX_PAUSE)
                _log.warning("%s failed (%s); again in %g s", what, err, pause)
                await self.clock.sleep(pause)

    async def notify_parents_forever(self) -> None:
        """Tell each live parent that its child finished, once, as a log event.

        The event id derives from the child's final event, so several processes (or a
        restart) appending the same notification write it once. A parent that has
        finished takes no more events: its children are found with ``children()``.
        """
        async for event_id, child in self._finished_tasks("notify:parents", with_parent=True):
            parent_id = child.parent_id
            if parent_id is None:
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
                await self._retrying(
                    functools.partial(self.store.append, parent_id, [new]),
                    f"notifying parent {parent_id}",
                )
