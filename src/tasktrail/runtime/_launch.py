"""What a client writes, decided without I/O: the checked ``task.created`` payload of a
launch or a rerun, and the events that finish or cancel a task from outside."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Protocol

from tasktrail.errors import InvalidInputError
from tasktrail.events import (
    CancelRequested,
    Event,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    round_trips,
)
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime._settings import count, optional_seconds, seconds

__all__ = [
    "SETTING",
    "Defaults",
    "Setting",
    "cancel_events",
    "created",
    "finish_events",
    "rerun_of",
]

_MAX_PRIORITY: Final = 1_000_000


class Setting:
    """The default of a per-task deadline: the client's own setting."""

    def __repr__(self) -> str:
        return "<the client's setting>"


SETTING: Final = Setting()


class Defaults(Protocol):
    """The launching client's settings a task records when its launch names none."""

    max_attempts: int
    task_ttl: float | None
    queue_timeout: float | None
    run_timeout: float | None


def created(
    defaults: Defaults,
    now: float,
    agent: str,
    prompt: str,
    *,
    input: Any,
    description: str,
    parent_id: str | None,
    session_id: str | None,
    concurrency_key: str | None,
    priority: int,
    max_attempts: int | None,
    metadata: Mapping[str, Any] | None,
    not_before: datetime | float | None,
    task_ttl: float | Setting | None,
    queue_timeout: float | Setting | None,
    run_timeout: float | Setting | None,
) -> TaskCreated:
    """The ``task.created`` payload of a launch at unix time ``now``, checked (nothing is
    written yet); what it leaves out comes from ``defaults``."""
    if not agent or not isinstance(agent, str):
        raise InvalidInputError(f"agent must be a non-empty str, not {agent!r}")
    if not isinstance(prompt, str):
        raise InvalidInputError(f"prompt must be a str, not {type(prompt).__name__}")
    if not isinstance(description, str):
        raise InvalidInputError(f"description must be a str, not {description!r}")
    if input is not None and not round_trips(input):
        raise InvalidInputError(
            f"input {input!r:.80} does not survive JSON unchanged; give JSON values "
            "(dict with str keys, list, str, number, bool, None), not tuples, sets, "
            "datetimes or objects"
        )
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, not {metadata!r}")
    count("priority", priority, low=-_MAX_PRIORITY, high=_MAX_PRIORITY)
    attempts = defaults.max_attempts if max_attempts is None else max_attempts
    count("max_attempts", attempts)

    def deadline(name: str, value: float | Setting | None, default: float | None) -> float | None:
        return default if value is SETTING else optional_seconds(name, value, positive=True)

    return TaskCreated(
        agent=agent, prompt=prompt, description=description, parent_id=parent_id,
        session_id=session_id, concurrency_key=concurrency_key, priority=priority,
        max_attempts=attempts, metadata=dict(metadata or {}), input=input,
        not_before=_start_time(not_before, now),
        task_ttl=deadline("task_ttl", task_ttl, defaults.task_ttl),
        queue_timeout=deadline("queue_timeout", queue_timeout, defaults.queue_timeout),
        run_timeout=deadline("run_timeout", run_timeout, defaults.run_timeout),
    )  # fmt: skip


def _start_time(not_before: datetime | float | None, now: float) -> float | None:
    """``not_before`` as unix time: an aware datetime, or seconds from ``now``."""
    if not_before is None:
        return None
    if isinstance(not_before, datetime):
        if not_before.utcoffset() is None:
            raise InvalidInputError("not_before must be an aware datetime (with tzinfo)")
        return not_before.timestamp()
    return now + seconds("not_before", not_before)


def rerun_of(original: Task, *, parent_exists: bool) -> TaskCreated:
    """The ``task.created`` payload of a rerun of ``original``: its agent, prompt, input
    and options, under the same parent if that parent still exists."""
    return TaskCreated(
        agent=original.agent, prompt=original.prompt, description=original.description,
        parent_id=original.parent_id if parent_exists else None,
        concurrency_key=original.concurrency_key, priority=original.priority,
        max_attempts=original.max_attempts, metadata=original.metadata, input=original.input,
        rerun_of=original.id, task_ttl=original.task_ttl,
        queue_timeout=original.queue_timeout, run_timeout=original.run_timeout,
    )  # fmt: skip


def finish_events(task: Task, outcome: Event) -> list[Event]:
    """The events that finish ``task`` from outside with ``outcome``: a completion of a
    task that never started is claimed and started in the same append, so its log still
    shows a legal path."""
    if isinstance(outcome, TaskCompleted):
        if task.state is TaskState.PENDING:
            claimed = TaskClaimed(worker_id="external", attempt=task.attempt + 1)
            return [claimed, TaskStarted(), outcome]
        if task.state is TaskState.STARTING:
            return [TaskStarted(), outcome]
    return [outcome]


def cancel_events(task: Task, *, force: bool) -> list[Event] | None:
    """The events of a cancel of the unfinished ``task``: a pending one (or any, with
    ``force``) is cancelled at once, a started one asked to stop; ``None`` when its stop
    was asked for already."""
    if force or task.state is TaskState.PENDING:
        return [CancelRequested(force=force), TaskCancelled(forced=force)]
    if task.cancel_requested:
        return None
    return [CancelRequested(force=force)]
