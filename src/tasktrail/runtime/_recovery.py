"""Crash recovery: is a task's owner dead, and what to record for its task.

An owner is judged dead only on evidence this observer can trust:

* its worker row is unknown, or records a clean stop;
* its process is gone, checked only where a pid means the same thing to both: the same
  host name, pid namespace and boot (two containers sharing a host name, a restarted
  machine or a process in another namespace never count);
* its heartbeat value has not changed for ``lease_timeout`` seconds of *this observer's*
  monotonic clock (:class:`Leases`). Another process's wall-clock time is never
  subtracted from this one's, so a clock that jumps (forward, back, or a heartbeat
  written while a clock was in the future) cannot make a healthy worker look dead, and
  cannot keep a dead one looking alive for longer than a lease.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

from tasktrail._crashpoints import crash_point
from tasktrail.errors import IllegalTransitionError, VersionConflictError
from tasktrail.events import NewEvent, TaskCancelled, TaskFailed, TaskRequeued
from tasktrail.lifecycle import ACTIVE_STATES
from tasktrail.projection import Task
from tasktrail.runtime.subprocess import end_orphaned_attempts
from tasktrail.store import EventStore
from tasktrail.store._workers import WorkerInfo

__all__ = [
    "LOOKS_LIVE",
    "Identity",
    "Leases",
    "WorkerInfo",
    "decide",
    "looks_live",
    "owner_is_dead",
    "pid_exists",
    "recover_orphans",
    "unserved_agents",
]

_log = logging.getLogger("tasktrail.runtime.recovery")  # a documented name


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip() or None
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Identity:
    """Where a pid means something: host name, pid namespace, boot."""

    host: str
    pid_namespace: str | None
    boot_id: str | None

    @staticmethod
    @functools.cache
    def here() -> Identity:
        """This process's identity (namespace and boot are ``None`` where unknown)."""
        try:
            namespace: str | None = os.readlink("/proc/self/ns/pid")
        except OSError:
            namespace = None
        return Identity(socket.gethostname(), namespace, _read("/proc/sys/kernel/random/boot_id"))

    def shares_pids_with(self, worker: WorkerInfo) -> bool:
        """Whether ``worker``'s pid can be checked here: same host, pid namespace and boot.

        A row that records neither namespace nor boot (written by a tasktrail before they
        were recorded) is judged by its host name alone, as it was then.
        """
        if worker.host != self.host:
            return False
        if worker.pid_namespace is None and worker.boot_id is None:
            return True
        return (worker.pid_namespace, worker.boot_id) == (self.pid_namespace, self.boot_id)


def pid_exists(pid: int) -> bool:
    """Whether a live process with this id exists in this pid namespace.

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


class Leases:
    """What this observer saw of each worker's heartbeat, timed by its monotonic clock."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, float]] = {}

    def silent_for(self, worker: WorkerInfo, now: float) -> float:
        """Seconds of this observer's monotonic clock (``now``) since ``worker``'s heartbeat
        value last changed; 0 the first time the worker is seen."""
        seen = self._seen.get(worker.worker_id)
        if seen is None or seen[0] != worker.heartbeat_at:
            self._seen[worker.worker_id] = (worker.heartbeat_at, now)
            return 0.0
        return now - seen[1]


def owner_is_dead(
    worker: WorkerInfo | None, *, silent_for: float, lease_timeout: float, here: Identity
) -> str | None:
    """Why the owner counts as dead (a reason to log), or ``None`` while it may live."""
    if worker is None:
        return "its worker is unknown"
    if worker.stopped_at is not None:
        return f"worker {worker.worker_id} stopped"
    if here.shares_pids_with(worker) and not pid_exists(worker.pid):
        return f"worker {worker.worker_id} (pid {worker.pid}) is gone"
    if silent_for >= lease_timeout:
        return (
            f"worker {worker.worker_id} sent no heartbeat for {silent_for:.0f} s "
            f"(lease {lease_timeout:g} s)"
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
    leases: Leases,
    now: float,
    lease_timeout: float,
    running_here: Container[str],
    here: Identity | None = None,
) -> list[Task]:
    """Append a decision for every ``starting``/``running`` task whose owner is dead.

    ``now`` is the observer's monotonic time. A task of this very worker id that is not
    running here belongs to an earlier life of this worker (or to a claim whose answer was
    lost). Each decision is an optimistic append, so when two processes recover at once,
    one decides and the other skips. Returns the tasks as the decisions left them.
    """
    here = here or Identity.here()
    workers = {w.worker_id: w for w in await store.list_workers()}
    silence = {w.worker_id: leases.silent_for(w, now) for w in workers.values()}
    decisions = []
    local: list[Task] = []  # attempts of a dead worker whose processes may run here
    for task in await store.list_tasks(state=ACTIVE_STATES):
        if task.id in running_here:
            continue
        worker = workers.get(task.worker_id or "")
        if task.worker_id == worker_id:
            why: str | None = "this worker restarted"
        else:
            why = owner_is_dead(
                worker,
                silent_for=silence.get(task.worker_id or "", 0.0),
                lease_timeout=lease_timeout,
                here=here,
            )
        if why is None:
            continue
        if worker is not None and here.shares_pids_with(worker):
            local.append(task)
        _log.info("task %s: recovery: %s", task.id, why)
        decisions.append(store.append(task.id, [decide(task, why)], expected_version=task.version))
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


LOOKS_LIVE: Final = 90.0
"""Seconds since its last heartbeat (by the wall clock) within which a worker looks live to
a one-off observer such as ``tasktrail ls`` (three default leases of heartbeats)."""


def looks_live(worker: WorkerInfo, *, now: float, here: Identity | None = None) -> bool:
    """Whether ``worker`` looks live to an observer that looks once (a command line): not
    stopped, its process present where that can be checked, else a recent heartbeat."""
    here = here or Identity.here()
    if worker.stopped_at is not None:
        return False
    if here.shares_pids_with(worker):
        return pid_exists(worker.pid)
    return abs(now - worker.heartbeat_at) <= LOOKS_LIVE


def unserved_agents(
    agents: set[str], workers: list[WorkerInfo], *, now: float, here: Identity | None = None
) -> set[str]:
    """The ``agents`` no live worker serves (empty when a live worker serves an unknown
    set of agents: one of an older tasktrail, which did not record them)."""
    served: set[str] = set()
    for worker in workers:
        if not looks_live(worker, now=now, here=here):
            continue
        if worker.agents is None:
            return set()
        served.update(worker.agents)
    return agents - served
