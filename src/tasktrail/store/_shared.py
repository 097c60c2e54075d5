"""Backend-independent halves of the store methods: checking an append, decoding a
projection row, replaying a task.

Both backends call these, so a rule about what may be appended or how ``state_at`` picks
its events is written once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

import msgspec

from tasktrail.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    PayloadTooLargeError,
    TaskNotFoundError,
)
from tasktrail.events import Event, NewEvent, RecordedEvent, as_stored, encode_payload
from tasktrail.ids import check_actor, check_task_id
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.store._plan import PendingAppend

__all__ = [
    "check_state_at",
    "check_versions",
    "decode_task",
    "prepare_append",
    "replay_chunks",
    "state_values",
]


def prepare_append(
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int | None,
    *,
    max_event_bytes: int,
    allow_nul: bool = True,
) -> PendingAppend:
    """Validate and encode one append (nothing is queued or written yet).

    ``allow_nul=False`` refuses a NUL character in the envelope's text, which a
    PostgreSQL ``text`` column cannot hold (inside a payload it is escaped JSON: fine).
    """
    check_task_id(stream_id)
    if not events:
        raise InvalidInputError("append needs at least one event")
    if expected_version is not None and (
        not isinstance(expected_version, int) or expected_version < 0
    ):
        raise InvalidInputError(f"expected_version must be an int >= 0, not {expected_version!r}")
    data: list[bytes] = []
    stored: list[NewEvent] = []
    for new in events:
        if not isinstance(new, NewEvent) or not isinstance(new.payload, Event):
            raise InvalidInputError(f"expected NewEvent(payload=<Event>), got {new!r:.80}")
        check_actor(new.actor)
        encoded = encode_payload(new.payload)
        if len(encoded) > max_event_bytes:
            raise PayloadTooLargeError(len(encoded), max_event_bytes)
        texts = [new.reason, new.correlation_id, new.event_id]
        if not allow_nul:  # the projection's query columns come from the payload
            texts += [getattr(new.payload, name, None) for name in _COLUMN_FIELDS]
        for text in texts:
            if text is not None:
                try:
                    text.encode()
                except (UnicodeEncodeError, AttributeError) as err:
                    raise InvalidInputError(f"invalid text {text!r:.40}: {err}") from err
                if not allow_nul and "\x00" in text:
                    raise InvalidInputError(
                        f"invalid text {text!r:.40}: PostgreSQL cannot store a NUL character"
                    )
        data.append(encoded)
        payload = as_stored(new.payload, encoded)
        stored.append(
            new if payload is new.payload else msgspec.structs.replace(new, payload=payload)
        )
    return PendingAppend(stream_id, stored, data, expected_version)


_COLUMN_FIELDS = ("agent", "parent_id", "concurrency_key")


def state_values(state: TaskState | str | Iterable[TaskState | str]) -> list[str]:
    """The state names of a ``state=`` filter (one state, or several)."""
    states = [state] if isinstance(state, str) else list(state)
    try:
        return [TaskState(s).value for s in states]
    except ValueError as err:
        raise InvalidInputError(
            f"unknown state in {state!r}; one of {', '.join(TaskState)}"
        ) from err


def check_state_at(version: int | None, at: datetime | float | None) -> None:
    """Refuse a ``state_at`` request that names both a version and a moment, or a bad one."""
    if version is not None and at is not None:
        raise InvalidInputError("give version or at, not both")
    if isinstance(at, datetime) and at.utcoffset() is None:
        raise InvalidInputError("at must be an aware datetime (with tzinfo), or unix seconds")
    if version is not None and (not isinstance(version, int) or version < 1):
        raise InvalidInputError(f"version must be an int >= 1, not {version!r}")


def check_versions(after_version: object, to_version: object, *, top: int) -> tuple[int, int]:
    """(after, last) of a ``after_version < version <= to_version`` range: ints >= 0, the
    last capped at the backend's largest version ``top``; InvalidInputError otherwise."""
    after = _version("after_version", after_version)
    last = top if to_version is None else min(_version("to_version", to_version), top)
    return min(after, top), last


def _version(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be an int >= 0, not {value!r}")
    return value


async def replay_chunks(
    task_id: str,
    chunks: AsyncIterator[list[RecordedEvent]],
    *,
    version: int | None = None,
    at: datetime | float | None = None,
) -> Task | None:
    """The task as its history (``chunks``, from version 1) left it at ``version`` or at
    ``at``, folded one chunk at a time; TaskNotFoundError when it has no events.

    ``at`` selects the events up to the first one recorded after it, so a clock that
    stepped back never yields a state that did not exist.
    """
    task: Task | None = None
    seen = 0
    async for events in chunks:  # a stream holds nothing between chunks: leaving is free
        for event in events:
            if isinstance(at, datetime):  # compare at the datetime's microsecond precision
                if event.recorded_at > at:
                    return task
            elif at is not None and event.timestamp > at:
                return task
            task, seen = fold(task, event), event.version
    if task is None:
        raise TaskNotFoundError(task_id)
    if version is not None and version > seen:
        raise InvalidInputError(f"task {task_id!r} has {seen} versions, not {version}")
    return task


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
