"""The current state of a task, as a fold over its events.

:func:`fold` is the only code that turns events into a :class:`Task`. The store uses it to
keep the ``tasks`` table current inside the append's transaction, ``rebuild()`` uses it to
recreate that table from the log, and the replay helpers use it to show a task at any
version or time; so all three agree by construction.

``fold`` trusts that the event is legal: legality is checked once, at append time, against
:mod:`tasktrail.lifecycle`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
from msgspec.structs import replace

from tasktrail.errors import CorruptEventError
from tasktrail.events import (
    CancelRequested,
    Event,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.lifecycle import ACTIVE_STATES, TERMINAL_STATES, TaskState, destination

__all__ = ["Task", "fold", "fold_all"]


class Task(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An immutable snapshot of one task, as of ``version``."""

    id: str
    state: TaskState
    agent: str
    prompt: str
    description: str = ""
    parent_id: str | None = None
    session_id: str | None = None
    concurrency_key: str | None = None
    priority: int = 0
    max_attempts: int = 1
    attempt: int = 0
    """The attempt now under way or last made (0 before the first claim)."""
    worker_id: str | None = None
    """The worker that holds (or last held) the task."""
    result: Any = None
    error: str | None = None
    exit_code: int | None = None
    """The exit code of the command whose exit failed the task (``-N``: signal ``N``)."""
    reason: str | None = None
    """The reason recorded with the latest state change, if any."""
    cancel_requested: bool = False
    not_before: float | None = None
    """Unix time before which the next attempt must not start (a scheduled start, or a
    retry's backoff)."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    input: Any = None
    """The task's input, any JSON value (``None``: none was given)."""
    rerun_of: str | None = None
    """The task this one re-runs, if it is a rerun."""
    task_ttl: float | None = None
    """Seconds the task may live from creation (recorded at launch; workers enforce it)."""
    queue_timeout: float | None = None
    """Seconds the task may wait for its first start (recorded at launch)."""
    run_timeout: float | None = None
    """Seconds one attempt may run (recorded at launch)."""
    version: int
    """How many events the task has: the version of its latest event."""
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    """When the current (or last) attempt's runner started; never includes queue time."""
    finished_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the task has reached ``completed``, ``failed`` or ``cancelled``."""
        return self.state in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Whether the task holds a concurrency slot (``starting`` or ``running``)."""
        return self.state in ACTIVE_STATES

    @property
    def limit_key(self) -> str:
        """The key its concurrency limit counts under: its concurrency key, else its agent."""
        return self.concurrency_key or self.agent


@functools.lru_cache(maxsize=256)
def _utc(timestamp: float) -> datetime:
    # The events of one commit share a timestamp: convert it once.
    return datetime.fromtimestamp(timestamp, UTC)


def _when(event: RecordedEvent) -> datetime:
    """The event's time as a datetime; a stored time no date can hold is damage."""
    try:
        return _utc(event.timestamp)
    except (OverflowError, OSError, ValueError, TypeError) as err:
        raise CorruptEventError(
            event.sequence, f"its time {event.timestamp!r} is not a valid date ({err})"
        ) from err


def _created(event: RecordedEvent, payload: TaskCreated, when: datetime) -> Task:
    return Task(
        id=event.stream_id,
        state=TaskState.PENDING,
        agent=payload.agent,
        prompt=payload.prompt,
        description=payload.description,
        parent_id=payload.parent_id,
        session_id=payload.session_id,
        concurrency_key=payload.concurrency_key,
        priority=payload.priority,
        max_attempts=payload.max_attempts,
        metadata=payload.metadata,
        input=payload.input,
        not_before=payload.not_before,
        rerun_of=payload.rerun_of,
        task_ttl=payload.task_ttl,
        queue_timeout=payload.queue_timeout,
        run_timeout=payload.run_timeout,
        reason=event.reason,
        version=event.version,
        created_at=when,
        updated_at=when,
    )


def fold(task: Task | None, event: RecordedEvent) -> Task:
    """Apply one event to a task (``None`` before its first event)."""
    payload: Event = event.payload
    when = _when(event)
    if task is None:
        if not isinstance(payload, TaskCreated):
            raise CorruptEventError(
                event.sequence,
                f"the first event of task {event.stream_id!r} is {event.type!r}, not a creation",
            )
        return _created(event, payload, when)
    changes: dict[str, Any] = {"version": event.version, "updated_at": when}
    state = destination(payload.trigger)
    if state is not None:  # a change of state (its reason with it); see lifecycle
        changes.update(state=state, reason=event.reason)
    match payload:
        case TaskClaimed(worker_id=worker_id, attempt=attempt):
            changes.update(worker_id=worker_id, attempt=attempt, not_before=None)
        case TaskStarted(session_id=session_id):
            changes.update(started_at=when)
            if session_id is not None:
                changes["session_id"] = session_id
        case TaskCompleted(result=result):
            changes.update(result=result, finished_at=when)
        case TaskFailed(error=error, exit_code=exit_code):
            changes.update(error=error, exit_code=exit_code, finished_at=when)
        case TaskCancelled():
            changes.update(finished_at=when)
        case TaskRequeued(not_before=not_before):
            changes.update(not_before=not_before, started_at=None)
        case CancelRequested():
            changes.update(cancel_requested=True)
        case _:
            pass  # output and progress change nothing but the version
    return replace(task, **changes)


def fold_all(events: Iterable[RecordedEvent], task: Task | None = None) -> Task | None:
    """Fold a sequence of one task's events, in order."""
    for event in events:
        task = fold(task, event)
    return task
