"""The operational tables, written once for both backends: pauses (the control log),
workers (leases, heartbeats), deliveries and subscriber checkpoints.

Not the task log: a worker's liveness is operational state, and recovery records every
decision it takes from it as events. Each write is one small idempotent statement through
the backend's ``_write_row``; a pause or resume is written by the backend under the lock
every claim takes (``_write_control``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

import msgspec

from tasktrail.store._controls import CONTROL_COLUMNS, LIST_PAUSES, Control, check_control, control
from tasktrail.store._driver import Driver
from tasktrail.store._workers import WORKER_COLUMNS, WorkerInfo, worker_info

__all__ = ["OperationalTables"]


class OperationalTables(Driver):
    """Pauses, workers, deliveries and checkpoints over the backend's driver calls."""

    @abstractmethod
    async def _write_control(
        self, action: str, kind: str, target: str, actor: str, reason: str | None
    ) -> Control | None:
        """Record a checked pause or resume under the write lock (see :mod:`._controls`)."""

    # -- pauses -----------------------------------------------------------------------------

    async def pause(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control:
        """Pause an agent (``kind="agent"``) or a concurrency key (``kind="key"``): from
        the moment this returns, no worker claims a task of it; running tasks go on.

        Recorded in the append-only control log with ``actor`` and ``reason``, under the
        write lock every claim takes (PostgreSQL: the log's advisory lock). Pausing what
        is already paused records nothing and returns the pause in force.
        """
        result = await self._control("pause", kind, target, actor, reason)
        assert result is not None
        return result

    async def resume(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control | None:
        """Resume what :meth:`pause` paused; returns the resume recorded, or ``None`` (and
        records nothing) when it was not paused."""
        return await self._control("resume", kind, target, actor, reason)

    async def _control(
        self, action: str, kind: str, target: str, actor: str, reason: str | None
    ) -> Control | None:
        kind, target, actor = check_control(kind, target, actor)
        return await self._write_control(action, kind, target, actor, reason)

    async def list_pauses(self) -> list[Control]:
        """The pauses in force (the control that made each), oldest first."""
        return [control(row) for row in await self._rows(LIST_PAUSES)]

    async def controls(self, *, after: int = 0, limit: int = 1000) -> list[Control]:
        """Up to ``limit`` rows of the control log (every pause and resume) after ``after``."""
        p = self._params()
        rows = await self._rows(
            f"SELECT {CONTROL_COLUMNS} FROM controls WHERE seq > {p.add(after)} "
            f"ORDER BY seq LIMIT {p.add(limit)}",
            p.values,
        )
        return [control(row) for row in rows]

    # -- workers: operational state, not the log (recovery records what it decides) ------

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
        now = self._clock()
        served = None if agents is None else msgspec.json.encode(sorted(agents)).decode()
        p = self._params()
        await self._write_row(
            f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES ({p.add(worker_id)}, {p.add(host)}, "
            f"{p.add(pid)}, {p.add(now)}, {p.add(now)}, NULL, {p.add(served)}, "
            f"{p.add(pid_namespace)}, {p.add(boot_id)}) "
            "ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
            "stopped_at = NULL, agents = excluded.agents, "
            "pid_namespace = excluded.pid_namespace, boot_id = excluded.boot_id",
            p.values,
        )

    async def heartbeat(self, worker_id: str) -> None:
        """Extend a worker's lease."""
        p = self._params()
        await self._write_row(
            f"UPDATE workers SET heartbeat_at = {p.add(self._clock())} "
            f"WHERE worker_id = {p.add(worker_id)}",
            p.values,
        )

    async def stop_worker(self, worker_id: str) -> None:
        """Record a clean shutdown: the worker's tasks may be recovered at once."""
        p = self._params()
        await self._write_row(
            f"UPDATE workers SET stopped_at = {p.add(self._clock())} "
            f"WHERE worker_id = {p.add(worker_id)}",
            p.values,
        )

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker ever registered in this database."""
        rows = await self._rows(f"SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at")
        return [worker_info(row) for row in rows]

    # -- subscribers ------------------------------------------------------------------------

    async def was_delivered(self, subscriber: str, event_id: str) -> bool:
        """Whether ``subscriber`` already handed ``event_id`` to its callback."""
        p = self._params()
        rows = await self._rows(
            f"SELECT 1 FROM deliveries WHERE subscriber = {p.add(subscriber)} "
            f"AND event_id = {p.add(event_id)}",
            p.values,
        )
        return bool(rows)

    async def mark_delivered(self, subscriber: str, event_id: str) -> None:
        """Record that ``subscriber`` handed ``event_id`` to its callback."""
        p = self._params()
        await self._write_row(
            f"INSERT INTO deliveries VALUES ({p.add(subscriber)}, {p.add(event_id)}, "
            f"{p.add(self._clock())}) ON CONFLICT DO NOTHING",
            p.values,
        )

    async def load_checkpoint(self, name: str) -> int:
        """The saved position of subscriber ``name`` (0 if it never saved one)."""
        p = self._params()
        rows = await self._rows(
            f"SELECT position FROM checkpoints WHERE name = {p.add(name)}", p.values
        )
        return int(rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Durably record that subscriber ``name`` has handled every event up to ``position``."""
        p = self._params()
        await self._write_row(
            f"INSERT INTO checkpoints VALUES ({p.add(name)}, {p.add(position)}, "
            f"{p.add(self._clock())}) ON CONFLICT (name) DO UPDATE "
            "SET position = excluded.position, updated_at = excluded.updated_at",
            p.values,
        )
