"""Crash recovery: is a task's owner dead, and what to record for its task.

Pure functions; the manager reads the workers and tasks and appends the decisions.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Container

from tasktrail._crashpoints import crash_point
from tasktrail.errors import IllegalTransitionError, VersionConflictError
from tasktrail.events import NewEvent, TaskCancelled, TaskFailed, TaskRequeued
from tasktrail.lifecycle import ACTIVE_STATES
from tasktrail.projection import Task
from tasktrail.runtime.subprocess import end_orphaned_attempts
from tasktrail.store import EventStore
from tasktrail.store._workers import WorkerInfo

__all__ = ["WorkerInfo", "decide", "owner_is_dead", "pid_exists", "recover_orphans"]


def pid_exists(pid: int) -> bool:
    """Whether a live process with this id exists on this host.

    A zombie (killed, not yet reaped by its parent: common in a container whose first
    process reaps nothing) counts as gone.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) S ...": the state follows the last ')', as comm may hold one
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): the lease decides


def owner_is_dead(
    worker: WorkerInfo | None, *, now: float, lease_timeout: float, host: str
) -> str | None:
    """Why the owner counts as dead (a reason to log), or ``None`` while it may live.

    Dead at once: unknown, stopped, or a process of this host that no longer exists.
    Otherwise dead once its last heartbeat is older than ``lease_timeout``.
    """
    if worker is None:
        return "its worker is unknown"
    if worker.stopped_at is not None:
        return f"worker {worker.worker_id} stopped"
    if worker.host == host and not pid_exists(worker.pid):
        return f"worker {worker.worker_id} (pid {worker.pid}) is gone"
    if now - worker.heartbeat_at > lease_timeout:
        return (
            f"worker {worker.worker_id} sent no heartbeat for "
            f"{now - worker.heartbeat_at:.0f} s (lease {lease_timeout:g} s)"
        )
    return None


def decide(task: Task, why: str, *, not_before: float | None = None) -> NewEvent:
    """The recovery decision for a live task whose owner died, as the event to append.

    A requested cancel is acknowledged; otherwise the task is re-queued while attempts
    remain, else failed.
    """
    if task.cancel_requested:
        return NewEvent(TaskCancelled(), actor="system", reason=f"recovery: {why}")
    if task.attempt < task.max_attempts:
        return NewEvent(
            TaskRequeued(not_before=not_before),
            actor="system",
            reason=f"recovery: {why}; attempt {task.attempt}/{task.max_attempts} lost, re-queued",
        )
    return NewEvent(
        TaskFailed(error=f"owner died: {why}"),
        actor="system",
        reason=f"recovery: {why}; no attempts left ({task.attempt} of {task.max_attempts})",
    )


async def recover_orphans(
    store: EventStore,
    *,
    worker_id: str,
    host: str,
    now: float,
    lease_timeout: float,
    running_here: Container[str],
) -> list[Task]:
    """Append a decision for every ``starting``/``running`` task whose owner is dead.

    A task of this very worker id that is not running here belongs to an earlier life of
    this worker. Each decision is an optimistic append, so when two processes recover at
    once, one decides and the other skips. Returns the tasks as the decisions left them.
    """
    workers = {w.worker_id: w for w in await store.list_workers()}
    decisions = []
    local: list[Task] = []  # attempts of a dead worker of this host: their processes may run
    for task in await store.list_tasks(state=ACTIVE_STATES):
        if task.id in running_here:
            continue
        worker = workers.get(task.worker_id or "")
        if task.worker_id == worker_id:
            why: str | None = "this worker restarted"
        else:
            why = owner_is_dead(worker, now=now, lease_timeout=lease_timeout, host=host)
        if why is not None:
            if worker is not None and worker.host == host:
                local.append(task)
            decisions.append(
                store.append(task.id, [decide(task, why)], expected_version=task.version)
            )
    if local:
        end_orphaned_attempts(local)  # before the next attempt can start beside them
    crash_point("recovery.before_decide")
    outcomes = await asyncio.gather(*decisions, return_exceptions=True)  # one commit
    crash_point("recovery.after_decide")
    decided = []
    for outcome in outcomes:
        if isinstance(outcome, VersionConflictError | IllegalTransitionError):
            continue  # someone else decided first
        if isinstance(outcome, BaseException):
            raise outcome
        decided.append(outcome.task)
    return decided
