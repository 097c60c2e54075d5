"""How a worker's writes reach the log: an attempt writes under its claim (fenced), and a
write or a claim met by a storage error (a busy database) is tried again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from tasktrail.errors import (
    AttemptSupersededError,
    IllegalTransitionError,
    InvalidInputError,
    StorageError,
    StoreClosedError,
)
from tasktrail.events import Event, NewEvent, TaskCancelled, TaskCompleted, TaskFailed
from tasktrail.projection import Task
from tasktrail.runtime._attempt import Attempt
from tasktrail.store import EventStore

__all__ = ["WRITE_TRIES", "Recorder", "tried_again"]

# The messages are the worker's (users configure that logger); this module is private.
_log = logging.getLogger("tasktrail.runtime.worker")
T = TypeVar("T")

WRITE_TRIES: Final = 5
"""Tries of a worker's write when the database is busy (then the error stands)."""


async def tried_again(write: Callable[[bool], Awaitable[T]], what: str) -> T:
    """``await write(again)``, tried again after a storage error (but a closed store) with
    a doubling pause, :data:`WRITE_TRIES` times at most. The commit may have happened
    before the error: ``again`` tells the write it is a retry, to be answered as such."""
    for tries in range(1, WRITE_TRIES + 1):
        try:
            return await write(tries > 1)
        except StorageError as err:
            if isinstance(err, StoreClosedError) or tries == WRITE_TRIES:
                raise
            _log.info("%s failed (%s); trying again", what, err)
            await asyncio.sleep(0.05 * 2**tries)
    raise AssertionError("unreachable")  # pragma: no cover


class Recorder:
    """The writes of a worker's attempts, each under its claim (worker id, attempt)."""

    def __init__(
        self, store: EventStore, worker_id: str, on_written: Callable[[Task], None]
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self._on_written = on_written

    async def append(self, run: Attempt, events: list[Event], reason: str | None) -> Task:
        """Append for a running attempt, only while it holds its task; a busy database is
        tried again (the same events, so a write that did commit is not made twice)."""
        task = run.ctx.task
        new = [NewEvent(e, actor=self.worker_id, reason=reason) for e in events]
        fence = (self.worker_id, task.attempt)

        async def write(_again: bool) -> Task:
            return (await self.store.append(task.id, new, fence=fence)).task

        written = await tried_again(write, f"task {task.id}: a write")
        self._on_written(written)
        return written

    async def record(self, run: Attempt, outcome: Event, reason: str | None) -> None:
        """Record how an attempt ended, under its claim."""
        try:
            task = await self.append(run, [outcome], reason)
            _log.info("task %s: attempt %d ended %s", task.id, task.attempt, task.state.value)
        except AttemptSupersededError:
            raise
        except IllegalTransitionError:
            # A cancel requested elsewhere overtook the outcome: acknowledge it instead.
            await self.settle(run)
        except InvalidInputError as err:
            if not isinstance(outcome, TaskCompleted):
                raise
            failed = TaskFailed(error=f"the result could not be stored: {err}")
            await self.append(run, [failed], "the runner's result could not be stored")

    async def settle(self, run: Attempt) -> None:
        """After an attempt could not record its outcome, leave the task in a legal end."""
        current = await self.store.get_task(run.ctx.task.id)
        if current is None or current.is_terminal:
            return
        if not (current.is_active and current.worker_id == self.worker_id
                and current.attempt == run.ctx.task.attempt):  # fmt: skip
            return
        if current.cancel_requested:
            event: Event = TaskCancelled()
            reason = "cancel acknowledged"
        else:
            event = TaskFailed(error="the attempt's outcome could not be recorded")
            reason = "the runner's result or output could not be stored"
        await self.append(run, [event], reason)
