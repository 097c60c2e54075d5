"""Which tasks to start, and which are past a deadline: pure decisions over the projection.

Counting slots from the projection (every process's ``starting``/``running`` tasks),
rather than from counters in memory, is what makes a leaked slot impossible: a crash, an
exception or a cancel can only change the count by changing a task's state in the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task

__all__ = ["Breach", "deadline_breach", "startable"]

Breach = tuple[Literal["expired", "timeout"], str]


def deadline_breach(
    task: Task,
    *,
    now: float,
    task_ttl: float | None,
    queue_timeout: float | None,
    run_timeout: float | None,
) -> Breach | None:
    """The deadline a live task has passed, if any.

    ``("expired", why)``: the task TTL (from creation) or the queue timeout (a task never
    started, waiting since creation) ran out: the task fails. ``("timeout", why)``: the
    running attempt exceeded the run timeout: it is stopped, then retried or failed.
    """
    age = now - task.created_at.timestamp()
    if task_ttl is not None and age >= task_ttl:
        return "expired", f"task TTL of {task_ttl:g} s expired"
    if (
        queue_timeout is not None
        and task.state is TaskState.PENDING
        and task.attempt == 0
        and age >= queue_timeout
    ):
        return "expired", f"queue timeout of {queue_timeout:g} s expired"
    if (
        run_timeout is not None
        and task.state is TaskState.RUNNING
        and task.started_at is not None
        and now - task.started_at.timestamp() >= run_timeout
    ):
        return "timeout", f"run timeout of {run_timeout:g} s expired"
    return None


def startable(
    queue: Iterable[Task],
    *,
    now: float,
    active: Mapping[str, int],
    running_here: int,
    max_running: int | None,
    limits: Mapping[str, int],
) -> list[Task]:
    """The tasks of ``queue`` (pending, in start order) to claim now.

    Skips tasks backing off (``not_before``) or with a cancel requested; never more than
    ``max_running`` here, nor more than ``limits[key]`` anywhere (``active`` counts the
    ``starting``/``running`` tasks of every process per key).
    """
    counts = dict(active)
    chosen: list[Task] = []
    for task in queue:
        if max_running is not None and running_here + len(chosen) >= max_running:
            break
        if task.state is not TaskState.PENDING or task.cancel_requested:
            continue
        if task.not_before is not None and task.not_before > now:
            continue
        key = task.limit_key
        limit = limits.get(key)
        if limit is not None and counts.get(key, 0) >= limit:
            continue
        counts[key] = counts.get(key, 0) + 1
        chosen.append(task)
    return chosen
