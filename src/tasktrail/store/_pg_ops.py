"""The PostgreSQL store's operational tables: workers (leases, heartbeats), deliveries,
subscriber checkpoints. Small idempotent statements, each retried like any other query.

Not the log: a worker's liveness is operational state, and recovery records every
decision it takes from it as events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import msgspec

from tasktrail.store._workers import WORKER_COLUMNS, WorkerInfo, worker_info

__all__ = ["OperationalTables"]


class OperationalTables(ABC):
    """Workers, deliveries and checkpoints, over the store's retried ``_fetch``/``_execute``."""

    @abstractmethod
    def _now(self) -> float: ...
    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...
    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    # -- workers -------------------------------------------------------------------------------

    async def register_worker(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        agents: Iterable[str] | None = None,
        pid_namespace: str | None = None,
        boot_id: str | None = None,
    ) -> None:
        """Record a worker as alive now (insert, or revive a reused id), with the agents it
        runs and the pid namespace and boot its pid belongs to (``None``: unknown)."""
        now = self._now()
        served = None if agents is None else msgspec.json.encode(sorted(agents)).decode()
        await self._execute(
            f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8) "
            "ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "stopped_at = NULL, agents = excluded.agents, "
            "pid_namespace = excluded.pid_namespace, boot_id = excluded.boot_id",
            worker_id, host, pid, now, now, served, pid_namespace, boot_id,
        )  # fmt: skip

    async def heartbeat(self, worker_id: str) -> None:
        """Extend a worker's lease."""
        await self._execute(
            "UPDATE workers SET heartbeat_at = $1 WHERE worker_id = $2", self._now(), worker_id
        )

    async def stop_worker(self, worker_id: str) -> None:
        """Record a clean shutdown: the worker's tasks may be recovered at once."""
        await self._execute(
            "UPDATE workers SET stopped_at = $1 WHERE worker_id = $2", self._now(), worker_id
        )

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker ever registered in this database."""
        rows = await self._fetch(f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at")
        return [worker_info(row) for row in rows]

    async def was_delivered(self, subscriber: str, event_id: str) -> bool:
        """Whether ``subscriber`` already handed ``event_id`` to its callback."""
        rows = await self._fetch(
            "SELECT 1 FROM deliveries WHERE subscriber = $1 AND event_id = $2",
            subscriber,
            event_id,
        )
        return bool(rows)

    async def mark_delivered(self, subscriber: str, event_id: str) -> None:
        """Record that ``subscriber`` handed ``event_id`` to its callback."""
        await self._execute(
            "INSERT INTO deliveries VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            subscriber,
            event_id,
            self._now(),
        )

    # -- subscribers -------------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> int:
        """The saved position of subscriber ``name`` (0 if it never saved one)."""
        rows = await self._fetch("SELECT position FROM checkpoints WHERE name = $1", name)
        return int(rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Durably record that subscriber ``name`` has handled every event up to ``position``."""
        await self._execute(
            "INSERT INTO checkpoints VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE "
            "SET position = excluded.position, updated_at = excluded.updated_at",
            name,
            position,
            self._now(),
        )
