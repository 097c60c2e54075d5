"""Planning one group commit: pure, synchronous, shared by every backend.

Given the appends queued since the last commit and what the database holds for their
streams, :func:`plan_batch` decides each append's fate (accepted, duplicate of an earlier
try, or refused with a typed error), numbers and hashes the accepted events, and folds
them into the new projection rows. The backend then writes the plan in one transaction
and answers each caller only after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import msgspec

from tasktrail.errors import (
    AttemptSupersededError,
    ConcurrencyLimitError,
    CorruptDatabaseError,
    EventIdConflictError,
    IllegalTransitionError,
    TaskExistsError,
    TaskNotFoundError,
    TasktrailError,
    VersionConflictError,
)
from tasktrail.events import EVENT_TAGS, NewEvent, RecordedEvent
from tasktrail.lifecycle import TaskState, TransitionKey, Trigger, transition_table
from tasktrail.projection import Task, fold
from tasktrail.store._chain import EventHeader, event_hash

__all__ = [
    "AppendResult",
    "BatchPlan",
    "EventRow",
    "PendingAppend",
    "TASK_COLUMNS",
    "TASK_UPSERT",
    "TaskRow",
    "decode_task",
    "pending_deadline",
    "plan_batch",
    "task_row",
]

EventRow: TypeAlias = tuple[
    int, str, str, int, str, int, float, str, "str | None", "str | None", str, str
]
"""(sequence, event_id, stream_id, version, type, schema_version, timestamp, actor, reason,
correlation_id, data, hash): one row of the ``events`` table."""

TaskRow: TypeAlias = tuple[
    str, str, str, "str | None", "str | None", int, int, int, float, float, str,
    "float | None", "str | None", "float | None",
]  # fmt: skip
"""(id, state, agent, parent_id, concurrency_key, priority, version, last_sequence,
created_at, updated_at, record, not_before, rerun_of, expires_at): one row of the ``tasks``
table."""
TASK_COLUMNS: Final = (
    "id, state, agent, parent_id, concurrency_key, priority, version, last_seq, created_at, "
    "updated_at, record, not_before, rerun_of, expires_at"
)
"""The columns of a projection row, in the order of :data:`TaskRow`."""
TASK_UPSERT: Final = (
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = excluded.version, "
    "last_seq = excluded.last_seq, updated_at = excluded.updated_at, record = excluded.record, "
    "not_before = excluded.not_before, expires_at = excluded.expires_at"
)
"""What writing a projection row over an existing one changes (the rest never does)."""

_encode_task = msgspec.json.Encoder(order="deterministic").encode


class AppendResult(msgspec.Struct, frozen=True):
    """What an append did."""

    stream_id: str
    version: int
    """The stream's version after the append (its last event's version)."""
    sequence: int
    """The global sequence number of the append's last event."""
    task: Task
    """The task as the append left it (for a duplicate: the task as it is now)."""
    duplicate: bool = False
    """True when these events were already in the log (an idempotent retry)."""


@dataclass(slots=True)
class PendingAppend:
    """One caller's append, validated and encoded, waiting for the next commit."""

    stream_id: str
    events: Sequence[NewEvent]
    data: Sequence[bytes]
    expected_version: int | None
    limit: int | None = None
    """At most this many tasks of the task's limit key may be starting or running after
    the append (checked only when the append starts the task)."""
    fence: tuple[str, int] | None = None
    """(worker id, attempt): the append is an attempt's, accepted only while that very
    attempt holds the task (``starting``/``running`` under that claim)."""


@dataclass(slots=True)
class BatchPlan:
    """What one commit writes, and what each caller will be told after it."""

    event_rows: list[EventRow] = field(default_factory=list)
    task_rows: dict[str, TaskRow] = field(default_factory=dict)
    outcomes: list[AppendResult | TasktrailError] = field(default_factory=list)
    last_sequence: int = 0
    last_hash: str = ""


def task_row(task: Task, last_sequence: int) -> TaskRow:
    """The ``tasks`` table row for ``task``: a few query columns and the full record."""
    return (
        task.id,
        task.state.value,
        task.agent,
        task.parent_id,
        task.concurrency_key,
        task.priority,
        task.version,
        last_sequence,
        task.created_at.timestamp(),
        task.updated_at.timestamp(),
        _encode_task(task).decode(),
        task.not_before,
        task.rerun_of,
        pending_deadline(task),
    )


def pending_deadline(task: Task) -> float | None:
    """When a pending task expires (its TTL, or its queue timeout before its first start),
    as unix time; ``None`` for a task that is not pending or has no such deadline.

    Only pending tasks need it as a query column: any worker may fail a pending task past
    its deadline, while a running attempt's deadlines are enforced by its own worker."""
    if task.state is not TaskState.PENDING:
        return None
    created = task.created_at.timestamp()
    deadlines = [] if task.task_ttl is None else [created + task.task_ttl]
    if task.queue_timeout is not None and task.attempt == 0:
        deadlines.append(created + task.queue_timeout)
    return min(deadlines, default=None)


def _check_ids(
    request: PendingAppend, known_ids: Mapping[str, tuple[str, int, int]]
) -> tuple[int, int] | None:
    """``(version, sequence)`` if the whole request is already stored, ``None`` if none of
    it is; raises if only part of it is, or if an id belongs to another event."""
    events = request.events
    if len(events) > 1:
        ids = [event.event_id for event in events]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise EventIdConflictError(dup, "appears twice in one append")
    if not known_ids:
        return None
    hits = [known_ids.get(event.event_id) for event in events]
    if all(hit is None for hit in hits):
        return None
    for event, hit in zip(events, hits, strict=True):
        if hit is None:
            raise EventIdConflictError(
                event.event_id, "is new but other events of the same append are already stored"
            )
        if hit[0] != request.stream_id:
            raise EventIdConflictError(event.event_id, f"is already stored in stream {hit[0]!r}")
    return max(hit[1] for hit in hits if hit), max(hit[2] for hit in hits if hit)


def plan_batch(
    requests: Iterable[PendingAppend],
    *,
    tasks: dict[str, Task | None],
    known_ids: dict[str, tuple[str, int, int]],
    last_sequence: int,
    last_hash: str,
    timestamp: float,
    active: dict[str, int] | None = None,
) -> BatchPlan:
    """Plan one commit. ``tasks`` (current projection of every stream in the batch) and
    ``known_ids`` (stored events among the batch's event ids) are updated in place, and
    so is ``active`` (starting/running tasks per limit key), needed when a request has a
    ``limit``."""
    plan = BatchPlan(last_sequence=last_sequence, last_hash=last_hash)
    table = transition_table()
    for request in requests:
        try:
            before = tasks.get(request.stream_id)
            result = _plan_one(request, plan, tasks, known_ids, timestamp, table, active)
            if active is not None and not result.duplicate:
                _count(active, before, -1)
                _count(active, result.task, +1)
            plan.outcomes.append(result)
        except TasktrailError as err:
            plan.outcomes.append(err)
    return plan


def _count(active: dict[str, int], task: Task | None, step: int) -> None:
    if task is not None and task.is_active:
        active[task.limit_key] = active.get(task.limit_key, 0) + step


def _check_fence(stream_id: str, task: Task | None, fence: tuple[str, int]) -> None:
    """Refuse an attempt's write once the attempt no longer holds the task."""
    worker_id, attempt = fence
    if task is None:
        raise TaskNotFoundError(stream_id)
    if task.is_active and task.worker_id == worker_id and task.attempt == attempt:
        return
    if task.is_terminal:
        owner = f"the task is {task.state.value}"
    elif task.state is TaskState.PENDING:
        owner = "the task was re-queued"
    else:
        owner = f"attempt {task.attempt} of worker {task.worker_id} holds the task"
    raise AttemptSupersededError(
        stream_id, task.state.value, worker_id=worker_id, attempt=attempt, owner=owner
    )


def _plan_one(
    request: PendingAppend,
    plan: BatchPlan,
    tasks: dict[str, Task | None],
    known_ids: dict[str, tuple[str, int, int]],
    timestamp: float,
    table: Mapping[TransitionKey, TaskState],
    active: dict[str, int] | None,
) -> AppendResult:
    stream_id = request.stream_id
    task = tasks.get(stream_id)
    stored = _check_ids(request, known_ids)
    if stored is not None:
        if task is None:  # pragma: no cover - the log and projection disagree
            raise TaskNotFoundError(stream_id)
        return AppendResult(stream_id, stored[0], stored[1], task, duplicate=True)
    if task is not None and request.events[0].payload.trigger is Trigger.CREATE:
        raise TaskExistsError(stream_id)
    if request.fence is not None:
        _check_fence(stream_id, task, request.fence)
    version = task.version if task is not None else 0
    if request.expected_version is not None and request.expected_version != version:
        raise VersionConflictError(stream_id, request.expected_version, version)

    sequence, previous = plan.last_sequence, plan.last_hash
    rows: list[EventRow] = []
    current = task
    for new, data in zip(request.events, request.data, strict=True):
        payload = new.payload
        trigger: Trigger = payload.trigger
        state = current.state if current is not None else None
        flag = current.cancel_requested if current is not None else False
        if (state, flag, trigger) not in table:
            if trigger is Trigger.CREATE:
                raise TaskExistsError(stream_id)
            if current is None:
                raise TaskNotFoundError(stream_id)
            detail = "a cancel was requested" if flag and not current.is_terminal else ""
            raise IllegalTransitionError(stream_id, state, trigger.value, detail=detail)
        sequence += 1
        version += 1
        header: EventHeader = (
            sequence, new.event_id, stream_id, version, EVENT_TAGS[type(payload)],
            payload.schema_version, timestamp, new.actor, new.reason, new.correlation_id,
        )  # fmt: skip
        previous = event_hash(previous, header, data)
        recorded = RecordedEvent(*header, payload, previous)
        current = fold(current, recorded)
        rows.append((*header, data.decode(), previous))
    if current is None:
        raise ValueError("an append needs at least one event")
    starts = current.is_active and (task is None or not task.is_active)
    if request.limit is not None and active is not None and starts:
        key = current.limit_key
        if active.get(key, 0) >= request.limit:
            raise ConcurrencyLimitError(stream_id, key, request.limit)
    plan.event_rows.extend(rows)
    plan.task_rows[stream_id] = task_row(current, sequence)
    plan.last_sequence, plan.last_hash = sequence, previous
    tasks[stream_id] = current
    for row in rows:
        known_ids[row[1]] = (stream_id, row[3], row[0])
    return AppendResult(stream_id, version, sequence, current)


_decode_task = msgspec.json.Decoder(Task).decode


def decode_task(record: str | bytes) -> Task:
    """A ``tasks.record`` as a Task; a damaged record is a CorruptDatabaseError."""
    try:
        return _decode_task(record)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as err:
        raise CorruptDatabaseError(
            f"a row of the tasks projection is damaged ({err}); run rebuild() to recreate "
            "the projection from the log"
        ) from err
