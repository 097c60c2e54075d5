"""``state_at``: a task replayed from its history, as it was at a version or a moment."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from tasktrail.errors import InvalidInputError, TaskNotFoundError
from tasktrail.events import RecordedEvent
from tasktrail.projection import Task, fold_all

__all__ = ["check_state_at", "replay_chunks"]


def check_state_at(version: int | None, at: datetime | float | None) -> None:
    """Refuse a ``state_at`` request that names both a version and a moment, or a bad one."""
    if version is not None and at is not None:
        raise InvalidInputError("give version or at, not both")
    if isinstance(at, datetime) and at.utcoffset() is None:
        raise InvalidInputError("at must be an aware datetime (with tzinfo), or unix seconds")
    if version is not None and (not isinstance(version, int) or version < 1):
        raise InvalidInputError(f"version must be an int >= 1, not {version!r}")


async def replay_chunks(
    task_id: str,
    chunks: AsyncIterator[list[RecordedEvent]],
    *,
    version: int | None = None,
    at: datetime | float | None = None,
) -> Task | None:
    """The task as its history (``chunks``, from version 1) left it at ``version`` or at
    ``at``, folded one chunk at a time; TaskNotFoundError when it has no events.

    ``at`` selects the events up to the first one recorded after it, so a clock that
    stepped back never yields a state that did not exist.
    """
    task: Task | None = None
    seen = 0
    async for events in chunks:  # a stream holds nothing between chunks: leaving is free
        kept = _recorded_by(events, at)
        if kept:
            task, seen = fold_all(events[:kept], task), events[kept - 1].version
        if kept < len(events):
            return task
    if task is None:
        raise TaskNotFoundError(task_id)
    if version is not None and version > seen:
        raise InvalidInputError(f"task {task_id!r} has {seen} versions, not {version}")
    return task


def _recorded_by(events: Sequence[RecordedEvent], at: datetime | float | None) -> int:
    """How many of ``events`` come before the first one recorded after ``at`` (all of
    them when ``at`` is None)."""
    if at is None:
        return len(events)
    for index, event in enumerate(events):
        if isinstance(at, datetime):  # compare at the datetime's microsecond precision
            if event.recorded_at > at:
                return index
        elif event.timestamp > at:
            return index
    return len(events)
