"""The record of a worker process, as the store keeps it."""

from __future__ import annotations

import msgspec

__all__ = ["WorkerInfo"]


class WorkerInfo(msgspec.Struct, frozen=True):
    """A worker as recorded in the ``workers`` table."""

    worker_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    """Unix time of the last heartbeat; the lease runs from here."""
    stopped_at: float | None = None
    """Set by a clean shutdown."""
