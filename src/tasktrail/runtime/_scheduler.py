"""Which live tasks are past a deadline: a pure decision over a task's own record.

The deadlines that bind a task are recorded in it at launch (``task_ttl``,
``queue_timeout``, ``run_timeout``); only workers enforce them: a pending task's by any
worker, a running attempt's by the worker that runs it.
"""

from __future__ import annotations

from typing import Literal

from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task

__all__ = ["Breach", "Check", "check_attempt", "deadline_breach"]

Breach = tuple[Literal["expired", "timeout"], str]


def deadline_breach(task: Task, *, now: float) -> Breach | None:
    """The deadline a live task has passed at ``now`` (unix time), if any.

    ``("expired", why)``: the task TTL (from creation) or the queue timeout (a task never
    started, waiting since creation) ran out: the task fails. ``("timeout", why)``: the
    running attempt exceeded the run timeout: it is stopped, then retried or failed.
    """
    age = now - task.created_at.timestamp()
    if task.task_ttl is not None and age >= task.task_ttl:
        return "expired", f"task TTL of {task.task_ttl:g} s expired"
    if (
        task.queue_timeout is not None
        and task.state is TaskState.PENDING
        and task.attempt == 0
        and age >= task.queue_timeout
    ):
        return "expired", f"queue timeout of {task.queue_timeout:g} s expired"
    if (
        task.run_timeout is not None
        and task.state is TaskState.RUNNING
        and task.started_at is not None
        and now - task.started_at.timestamp() >= task.run_timeout
    ):
        return "timeout", f"run timeout of {task.run_timeout:g} s expired"
    return None


Check = tuple[Literal["lost", "superseded", "cancel", "ttl", "timeout", "start"], str]


def check_attempt(
    mine: Task,
    current: Task | None,
    *,
    worker_id: str,
    now: float,
    running_for: float,
    started: bool,
    start_timeout: float | None,
) -> Check | None:
    """Why the attempt of ``mine`` (this worker's, running for ``running_for`` seconds)
    must stop, given its task as the log has it now (``current``), if it must.

    ``lost``: the task finished elsewhere; ``superseded``: another attempt holds it;
    ``cancel``: a cancel was requested; ``ttl``/``timeout``: a deadline passed at unix
    time ``now``; ``start``: the runner did not report its start in ``start_timeout``.
    """
    if current is None or current.is_terminal:
        return "lost", "finished elsewhere"
    holds = current.worker_id == worker_id and current.attempt == mine.attempt
    if not (current.is_active and holds):
        return "superseded", (
            f"now {current.state.value}, attempt {current.attempt} of {current.worker_id}"
        )
    if current.cancel_requested:
        return "cancel", "cancelled by request"
    breach = deadline_breach(current, now=now)
    if breach is not None:
        return ("ttl" if breach[0] == "expired" else "timeout"), breach[1]
    if start_timeout is not None and not started and running_for >= start_timeout:
        return "start", f"the runner did not start within {start_timeout:g} s"
    return None
