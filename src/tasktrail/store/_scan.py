"""Whole-log passes over any backend's rows: chain verification and folding.

A backend supplies the event rows in sequence order, in chunks, as
``(seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, reason,
correlation_id, data as bytes, hash)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Final

from tasktrail.errors import TamperedLogError
from tasktrail.events import RecordedEvent
from tasktrail.projection import Task, fold
from tasktrail.store._chain import GENESIS, MOVED, walk_chain
from tasktrail.store._plan import TaskRow, task_row

__all__ = [
    "APPEND_ONLY_TRIGGERS",
    "check_chain",
    "check_first",
    "fold_events",
    "fold_rows",
    "fold_tasks",
]

Rows = AsyncIterator[Sequence[Sequence[Any]]]
APPEND_ONLY_TRIGGERS: Final = frozenset({"events_append_only_update", "events_append_only_delete"})
"""The triggers that refuse UPDATE and DELETE on the log, by the same names on both backends
(a report's ``append_only`` says whether they are all in place)."""


async def check_chain(chunks: Rows) -> tuple[int, int, str]:
    """(events, head sequence, head hash); raises TamperedLogError at the first bad or
    missing event."""
    previous, expected, count = GENESIS, 1, 0
    async for rows in chunks:
        walk = walk_chain(rows, previous=previous, expected=expected)
        if walk.bad is not None:
            raise TamperedLogError(walk.bad, walk.why or "")
        previous, expected, count = walk.last_hash, walk.expected, count + walk.good
    return count, expected - 1, previous


def check_first(low: int | None) -> None:
    """Raise TamperedLogError when the log's lowest sequence number is below 1 (a scan
    starts after 0: such a row would go unseen)."""
    if low is not None and low < 1:
        raise TamperedLogError(low, MOVED)


async def fold_tasks(
    chunks: Rows, to_event: Callable[[Sequence[Any]], RecordedEvent]
) -> tuple[dict[str, Task], dict[str, int]]:
    """Every task folded from the whole log, in creation order, and the sequence number of
    its last event."""
    tasks: dict[str, Task] = {}
    last: dict[str, int] = {}
    async for rows in chunks:
        fold_events(tasks, last, rows, to_event)
    return tasks, last


def fold_events(
    tasks: dict[str, Task],
    last: dict[str, int],
    rows: Iterable[Sequence[Any]],
    to_event: Callable[[Sequence[Any]], RecordedEvent],
) -> None:
    """Fold event ``rows`` (in sequence order) into ``tasks``, noting in ``last`` the
    sequence number of each task's last event."""
    for row in rows:
        event = to_event(row)
        tasks[event.stream_id] = fold(tasks.get(event.stream_id), event)
        last[event.stream_id] = event.sequence


async def fold_rows(
    chunks: Rows, to_event: Callable[[Sequence[Any]], RecordedEvent]
) -> dict[str, TaskRow]:
    """The projection row of every task, folded from the whole log, in creation order."""
    tasks, last = await fold_tasks(chunks, to_event)
    return {task_id: task_row(task, last[task_id]) for task_id, task in tasks.items()}
