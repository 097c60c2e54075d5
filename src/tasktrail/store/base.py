"""The store contract every backend fulfils, and the records it returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, Self

import msgspec

from tasktrail.events import NewEvent, RecordedEvent
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.store._claim import ClaimRequest, ClaimResult
from tasktrail.store._controls import Control
from tasktrail.store._latency import CommitStatistics
from tasktrail.store._plan import AppendResult
from tasktrail.store._workers import WorkerInfo

if TYPE_CHECKING:
    from tasktrail.store.subscription import Subscription

__all__ = ["EventStore", "VerifyReport"]


class VerifyReport(msgspec.Struct, frozen=True):
    """The result of a successful ``verify()``."""

    events: int
    """How many events were checked."""
    head_sequence: int
    """The sequence number of the last event (0 for an empty log)."""
    head_hash: str
    """The last event's hash. Keep it elsewhere to detect a rewrite of the whole chain."""
    append_only: bool = True
    """Whether the triggers that refuse UPDATE and DELETE on the log are in place."""


class EventStore(Protocol):
    """An append-only, hash-chained log of task events with its task projection.

    What every backend (SQLite, PostgreSQL) provides, and all the runtime relies on; the
    contract test suite (``tests/store/test_contract.py``) runs against each backend.
    """

    async def open(self) -> Self: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def close(self) -> None: ...

    # the log
    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        limit: int | None = None,
        fence: tuple[str, int] | None = None,
    ) -> AppendResult: ...
    async def claim(self, request: ClaimRequest) -> ClaimResult: ...
    async def drain(self) -> None: ...
    def commit_statistics(self) -> CommitStatistics: ...
    async def wait_for_commit(self, timeout: float) -> None: ...
    async def wait_for_change(self, timeout: float) -> bool: ...
    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]: ...
    def iter_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        chunk_bytes: int = ...,
    ) -> AsyncIterator[list[RecordedEvent]]: ...
    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]: ...
    async def head(self) -> int: ...

    # the projection
    async def get_task(self, task_id: str) -> Task | None: ...
    async def get_tasks(self, task_ids: Iterable[str]) -> list[Task]: ...
    async def list_tasks(
        self,
        *,
        state: TaskState | str | Iterable[TaskState | str] | None = None,
        agent: str | Iterable[str] | None = None,
        parent_id: str | None = None,
        rerun_of: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        worker_id: str | None = None,
        id_prefix: str | None = None,
        finished_since: datetime | float | None = None,
        only_finished_since: datetime | float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        sort: str = "created",
        after_id: str | None = None,
        offset: int = 0,
    ) -> list[Task]: ...
    async def count_tasks(
        self,
        *,
        limit: int | None = None,
        sort: str = "created",
        newest_first: bool = False,
        after_id: str | None = None,
        **filters: Any,
    ) -> int: ...
    async def task_counts(self) -> dict[str, dict[str, int]]: ...
    async def queued_tasks(
        self,
        *,
        limit: int,
        agents: Iterable[str] | None = None,
        created_before: float | None = None,
    ) -> list[Task]: ...
    async def expired_tasks(
        self, *, now: float, limit: int, agents: Iterable[str] | None = None
    ) -> list[Task]: ...
    async def finished_after(
        self, after: int, *, limit: int = 10_000, with_parent: bool = False
    ) -> tuple[list[tuple[str, Task]], int]: ...
    async def active_counts(self) -> dict[str, int]: ...
    async def history(self, task_id: str) -> list[RecordedEvent]: ...
    async def state_at(
        self, task_id: str, *, version: int | None = None, at: datetime | float | None = None
    ) -> Task | None: ...

    # checking
    async def verify(self) -> VerifyReport: ...
    async def rebuild(self) -> int: ...
    async def check_projection(self) -> list[str]: ...

    # pauses: agents and concurrency keys no worker claims a task of, for now
    async def pause(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control: ...
    async def resume(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control | None: ...
    async def list_pauses(self) -> list[Control]: ...
    async def controls(self, *, after: int = 0, limit: int = 1000) -> list[Control]: ...

    # workers: leases and heartbeats, shared by every process and host
    async def register_worker(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        agents: Iterable[str] | None = None,
        pid_namespace: str | None = None,
        boot_id: str | None = None,
    ) -> None: ...
    async def heartbeat(self, worker_id: str) -> None: ...
    async def stop_worker(self, worker_id: str) -> None: ...
    async def list_workers(self) -> list[WorkerInfo]: ...

    # subscribers
    async def load_checkpoint(self, name: str) -> int: ...
    async def save_checkpoint(self, name: str, position: int) -> None: ...
    async def was_delivered(self, subscriber: str, event_id: str) -> bool: ...
    async def mark_delivered(self, subscriber: str, event_id: str) -> None: ...
    def subscribe(
        self, name: str, *, batch_size: int = 500, poll_interval: float = 0.5
    ) -> Subscription: ...
