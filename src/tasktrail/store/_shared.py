"""Backend-independent halves of the store methods: checking an append, decoding a
projection row, replaying a task.

Both backends call these, so a rule about what may be appended or how ``state_at`` picks
its events is written once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from tasktrail.errors import CorruptDatabaseError, InvalidInputError, PayloadTooLargeError
from tasktrail.events import Event, NewEvent, RecordedEvent, as_stored, encode_payload
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.store._plan import PendingAppend
from tasktrail.store._validate import check_actor, check_task_id

__all__ = ["check_state_at", "decode_task", "prepare_append", "replay", "state_values"]


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


def replay(
    task_id: str,
    events: list[RecordedEvent],
    *,
    version: int | None = None,
    at: datetime | float | None = None,
) -> Task | None:
    """The task as ``events`` (its whole history) left it at ``version`` or at ``at``.

    ``at`` selects the events up to the first one recorded after it, so a clock that
    stepped back never yields a state that did not exist.
    """
    if version is not None:
        if version > events[-1].version:
            raise InvalidInputError(
                f"task {task_id!r} has {events[-1].version} versions, not {version}"
            )
        events = events[:version]
    elif at is not None:
        if isinstance(at, datetime):  # compare at the datetime's microsecond precision
            events = list(itertools.takewhile(lambda e: e.recorded_at <= at, events))
        else:
            events = list(itertools.takewhile(lambda e: e.timestamp <= at, events))
    task: Task | None = None
    for event in events:
        task = fold(task, event)
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
