"""The reads and writes a batch's steps ask their backend for (see
:mod:`tasktrail.store._commit`): each backend executes them with its own driver."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeAlias

from tasktrail.store._claim import QueuePage
from tasktrail.store._plan import EventRow, TaskRow

__all__ = [
    "Op",
    "ReadActive",
    "ReadClaimed",
    "ReadKnownIds",
    "ReadNextAt",
    "ReadPaused",
    "ReadQueue",
    "ReadTail",
    "ReadTasks",
    "Write",
    "drive",
]


@dataclass(frozen=True, slots=True)
class ReadTail:
    """-> (sequence, hash) of the log's last event; (0, GENESIS) when it is empty."""


@dataclass(frozen=True, slots=True)
class ReadTasks:
    """-> {task id: Task} for each of ``ids`` that exists."""

    ids: list[str]


@dataclass(frozen=True, slots=True)
class ReadActive:
    """-> {limit key: tasks starting or running}."""


@dataclass(frozen=True, slots=True)
class ReadKnownIds:
    """-> {event id: (stream id, version, sequence)} for each of ``ids`` stored."""

    ids: list[str]


@dataclass(frozen=True, slots=True)
class ReadQueue:
    """-> [(position, Task)]: one page of the start queue (see :class:`QueuePage`)."""

    page: QueuePage


@dataclass(frozen=True, slots=True)
class ReadNextAt:
    """-> the earliest ``not_before`` after ``now`` of a pending task of ``agents`` (and
    among ``task_ids``), or ``None``."""

    now: float
    agents: tuple[str, ...] | None
    task_ids: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ReadPaused:
    """-> (paused agents, paused keys): the pauses in force (see :mod:`._controls`)."""


@dataclass(frozen=True, slots=True)
class ReadClaimed:
    """-> [task id]: the tasks with an event whose id lies in [low, high)."""

    low: str
    high: str


@dataclass(frozen=True, slots=True)
class Write:
    """-> None: insert ``events`` and upsert ``tasks`` (``last_sequence`` is the last event's)."""

    events: list[EventRow]
    tasks: list[TaskRow]
    last_sequence: int


Op: TypeAlias = (
    ReadTail
    | ReadTasks
    | ReadActive
    | ReadKnownIds
    | ReadQueue
    | ReadNextAt
    | ReadClaimed
    | ReadPaused
    | Write
)


def drive(steps: Generator[Op, Any, Any], execute: Callable[[Op], Any]) -> Any:
    """Run ``steps`` to its end with a synchronous ``execute``; return what it returns."""
    result: Any = None
    while True:
        try:
            op = steps.send(result)
        except StopIteration as stop:
            return stop.value
        result = execute(op)
