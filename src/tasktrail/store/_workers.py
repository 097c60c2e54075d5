"""The record of a worker process, as the store keeps it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

__all__ = ["WORKER_COLUMNS", "WorkerInfo", "worker_info"]

WORKER_COLUMNS: Final = (
    "worker_id, host, pid, started_at, heartbeat_at, stopped_at, agents, pid_namespace, boot_id"
)
"""The columns of the ``workers`` table, in the order of :class:`WorkerInfo`'s fields."""


class WorkerInfo(msgspec.Struct, frozen=True):
    """A worker as recorded in the ``workers`` table."""

    worker_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    """Unix time of the last heartbeat, by the worker's own clock. Observers judge the
    lease by whether this value still changes, timed by their own monotonic clock."""
    stopped_at: float | None = None
    """Set by a clean shutdown."""
    agents: tuple[str, ...] | None = None
    """The agents the worker runs (``None``: not recorded, e.g. a worker of an older
    tasktrail)."""
    pid_namespace: str | None = None
    """The pid namespace of the worker's pid (Linux: ``/proc/self/ns/pid``)."""
    boot_id: str | None = None
    """The boot of its host (Linux: ``/proc/sys/kernel/random/boot_id``)."""


def worker_info(row: Sequence[Any]) -> WorkerInfo:
    """A row of :data:`WORKER_COLUMNS` as a :class:`WorkerInfo`."""
    agents = None if row[6] is None else tuple(msgspec.json.decode(row[6], type=list[str]))
    return WorkerInfo(
        row[0], row[1], int(row[2]), float(row[3]), float(row[4]),
        None if row[5] is None else float(row[5]), agents, row[7], row[8],
    )  # fmt: skip
