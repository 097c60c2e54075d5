"""Claims: which pending tasks a worker takes, decided inside the write transaction.

A worker does not read the queue and race other workers for its head. It asks the store to
claim up to ``slots`` tasks for it; the store's committer answers the request under the
database's write lock, in the same transaction as the appends queued beside it: it walks
the queue in start order (highest priority, then first in), skips what cannot start (a
full concurrency key, a backoff or scheduled start not yet due, a cancel request, a task
already running in the claiming worker) and appends the claim of each chosen task. So no
two workers ever claim one task, no claim is ever lost to a race, and a full key never
hides the rest of the queue: the walk leaves out the keys that are full and goes on.

Pure and synchronous: the backend runs the queries these steps ask for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec

from tasktrail.events import new_event_id
from tasktrail.projection import Task

__all__ = [
    "FUTURE_TOLERANCE",
    "ClaimRequest",
    "ClaimResult",
    "QueuePage",
    "QueuePosition",
    "choose",
]

FUTURE_TOLERANCE: Final = 60.0
"""Seconds by which a task's last write may lie in the future (another host's clock, a
clock stepped back) before its ``not_before`` stops delaying it. A retry's backoff written
while the clock was far ahead would otherwise hold the task until that clock came round."""

QueuePosition = tuple[int, float, int]
"""A row's place in the start order: (priority, created_at, insertion order)."""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Claim up to ``slots`` startable tasks for ``worker_id``."""

    worker_id: str
    slots: int
    now: float
    agents: frozenset[str] | None = None
    """Only tasks of these agents (the ones the worker has runners for)."""
    limits: Mapping[str, int] = field(default_factory=dict)
    """At most this many tasks of a limit key starting or running, in every process."""
    start_agents: frozenset[str] = frozenset()
    """Agents whose claim also records the start (runners that do not report it)."""
    task_ids: frozenset[str] | None = None
    """Only these tasks (a foreground runner of tasks it launched itself)."""
    exclude: frozenset[str] = frozenset()
    """Tasks with an attempt still alive in the worker: never claimed again meanwhile."""
    nonce: str = field(default_factory=lambda: new_event_id()[:24])
    """The prefix of the event ids of this request's claims (time-ordered, like every
    event id), by which a retry finds the claims of a try whose answer was lost."""
    retry: bool = False
    """This request was sent before and its answer lost (an error after the commit may
    have come): the claims it made, if any, are answered instead of new ones."""

    def event_id(self, index: int) -> str:
        """The event id of this request's ``index``-th claim event."""
        return f"{self.nonce}{index:08x}"

    def id_range(self) -> tuple[str, str]:
        """[low, high): every event id this request can have made."""
        return self.nonce, f"{self.nonce}g"  # "g" sorts after every hex digit


class ClaimResult(msgspec.Struct, frozen=True):
    """What a claim took, and when the worker should look again."""

    tasks: list[Task]
    """The claimed tasks, as the claim left them (``starting``, or ``running``)."""
    next_at: float | None = None
    """The earliest scheduled start or backoff still ahead among the tasks it could run,
    when it claimed fewer than it asked for (``None``: nothing is scheduled)."""


@dataclass(frozen=True, slots=True)
class QueuePage:
    """One page of the start queue: pending tasks due at ``now``, in start order."""

    now: float
    limit: int
    agents: tuple[str, ...] | None
    task_ids: tuple[str, ...] | None
    full_keys: tuple[str, ...]
    """Limit keys to leave out: they have no slot left."""
    after: QueuePosition | None
    """Start after this position (``None``: from the head)."""
    paused_agents: tuple[str, ...] = ()
    """Agents paused (``tasktrail pause --agent``): none of their tasks is claimed."""
    paused_keys: tuple[str, ...] = ()
    """Limit keys paused (``tasktrail pause --key``): none of their tasks is claimed."""


def choose(
    rows: Iterable[tuple[QueuePosition, Task]],
    *,
    request: ClaimRequest,
    counts: dict[str, int],
    full: set[str],
    chosen: list[Task],
) -> None:
    """Take, from one page of the queue, the tasks the request may claim, in order.

    ``counts`` (tasks starting/running per limit key), ``full`` (keys without a slot) and
    ``chosen`` are updated in place, so a walk over several pages continues where it was.
    """
    limits = request.limits
    for _, task in rows:
        if len(chosen) >= request.slots:
            return
        if task.cancel_requested or task.id in request.exclude:
            continue
        key = task.limit_key
        limit = limits.get(key)
        if limit is not None and counts.get(key, 0) >= limit:
            full.add(key)
            continue
        counts[key] = counts.get(key, 0) + 1
        if limit is not None and counts[key] >= limit:
            full.add(key)
        chosen.append(task)
