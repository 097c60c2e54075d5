"""The events of a task's life, how they are encoded, and how old shapes are upcast.

Every event type is a frozen msgspec ``Struct`` with a stable tag (``"task.created"`` ...)
and a ``schema_version``. The rules of schema evolution (see the docs):

* a tag never changes and is never reused;
* a new field gets a default, so older events still decode (no version bump needed);
* any other change bumps ``schema_version`` and adds an upcaster that turns the previous
  shape into the new one. Old events are upcast when read, so an old log replays.

Two types wrap a payload: :class:`NewEvent` is what you append, :class:`RecordedEvent` is
what you read back (with its sequence number, version, time and hash).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, TypeAlias

import msgspec

from tasktrail.errors import CorruptEventError, InvalidInputError, UnknownEventTypeError
from tasktrail.ids import random_hex
from tasktrail.lifecycle import Trigger

__all__ = [
    "CancelRequested",
    "ChildFinished",
    "EVENT_TAGS",
    "EVENT_TYPES",
    "Event",
    "NewEvent",
    "OutputAppended",
    "ProgressReported",
    "RecordedEvent",
    "TaskCancelled",
    "TaskClaimed",
    "TaskCompleted",
    "TaskCreated",
    "TaskFailed",
    "TaskRequeued",
    "TaskStarted",
    "Upcaster",
    "as_stored",
    "decode_payload",
    "encode_payload",
    "new_event_id",
    "round_trips",
]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event payload. Subclasses set ``trigger`` and ``schema_version``."""

    trigger: ClassVar[Trigger]
    schema_version: ClassVar[int] = 1


class TaskCreated(Event, frozen=True, kw_only=True, omit_defaults=True, tag="task.created"):
    """A task was created; it is ``pending``.

    Schema 2. Schema 1 was the seed managers' shape, ``{"options": {"agent", "prompt",
    "description"}, "sessionId"}``; it is upcast on read. The fields after ``metadata``
    came later, with defaults (no schema change). A field at its default is not written.
    """

    trigger = Trigger.CREATE
    schema_version = 2

    agent: str
    prompt: str = ""
    description: str = ""
    parent_id: str | None = None
    session_id: str | None = None
    concurrency_key: str | None = None
    priority: int = 0
    max_attempts: int = 1
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    input: Any = None
    """The task's input: any JSON value (``None``: no input)."""
    not_before: float | None = None
    """Unix time before which the task must not start (a scheduled start)."""
    rerun_of: str | None = None
    """The task this one re-runs (``TaskManager.rerun``)."""
    task_ttl: float | None = None
    """Seconds the task may live, from creation, before a worker fails it."""
    queue_timeout: float | None = None
    """Seconds the task may wait for its first start before a worker fails it."""
    run_timeout: float | None = None
    """Seconds one attempt may run before its worker stops it (then retries or fails)."""


class TaskClaimed(Event, frozen=True, kw_only=True, tag="task.claimed"):
    """A worker claimed the task for an attempt; it is ``starting``."""

    trigger = Trigger.CLAIM

    worker_id: str
    attempt: int


class TaskStarted(Event, frozen=True, kw_only=True, tag="task.started"):
    """The runner started (session created, process spawned); the task is ``running``."""

    trigger = Trigger.START

    session_id: str | None = None


class TaskCompleted(Event, frozen=True, kw_only=True, tag="task.completed"):
    """The runner returned a result; the task is ``completed``."""

    trigger = Trigger.COMPLETE

    result: Any = None


class TaskFailed(Event, frozen=True, kw_only=True, tag="task.failed"):
    """The task failed (runner error, timeout, TTL, attempts exhausted); it is ``failed``."""

    trigger = Trigger.FAIL

    error: str
    exit_code: int | None = None
    """The exit code of the task's command when that exit failed it (``-N``: killed by
    signal ``N``); ``None`` for any other failure."""


class TaskCancelled(Event, frozen=True, kw_only=True, tag="task.cancelled"):
    """A cancel was carried out (the acknowledgement); the task is ``cancelled``."""

    trigger = Trigger.CANCEL

    forced: bool = False


class TaskRequeued(Event, frozen=True, kw_only=True, tag="task.requeued"):
    """An attempt ended without an outcome (owner died, retry); the task is ``pending``."""

    trigger = Trigger.REQUEUE

    not_before: float | None = None
    """Unix time before which the next attempt must not start (retry backoff)."""


class CancelRequested(Event, frozen=True, kw_only=True, tag="task.cancel_requested"):
    """A cancel was asked for. From now on the task can only end ``cancelled``."""

    trigger = Trigger.REQUEST_CANCEL

    force: bool = False


class OutputAppended(Event, frozen=True, kw_only=True, tag="task.output"):
    """The runner wrote output. Changes no state."""

    trigger = Trigger.ANNOTATE

    text: str
    channel: str = "stdout"


class ProgressReported(Event, frozen=True, kw_only=True, tag="task.progress"):
    """The runner reported progress. Changes no state."""

    trigger = Trigger.ANNOTATE

    current: float
    total: float | None = None
    message: str | None = None


class ChildFinished(Event, frozen=True, kw_only=True, tag="task.child_finished"):
    """A child task (``parent_id`` = this task) finished. Changes no state.

    Appended to a live parent by the manager's notifier, with an event id derived from
    the child's final event, so the notification is in the log exactly once.
    """

    trigger = Trigger.ANNOTATE

    child_id: str
    state: str
    result: Any = None
    error: str | None = None


AnyEvent: TypeAlias = (
    TaskCreated
    | TaskClaimed
    | TaskStarted
    | TaskCompleted
    | TaskFailed
    | TaskCancelled
    | TaskRequeued
    | CancelRequested
    | OutputAppended
    | ProgressReported
    | ChildFinished
)

EVENT_TYPES: Final[Mapping[str, type[Event]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        TaskCreated,
        TaskClaimed,
        TaskStarted,
        TaskCompleted,
        TaskFailed,
        TaskCancelled,
        TaskRequeued,
        CancelRequested,
        OutputAppended,
        ProgressReported,
        ChildFinished,
    )
}
"""Every event type by its tag."""

EVENT_TAGS: Final[Mapping[type[Event], str]] = {cls: tag for tag, cls in EVENT_TYPES.items()}
"""The tag of every event type."""


def new_event_id() -> str:
    """A fresh event id: 32 hex digits, the time in milliseconds (12) then 80 random bits.

    Ids made later sort later, so the log's unique index on them grows at its end: an
    append touches the same few index pages however long the log is (random ids would
    touch one page per event once the index outgrows the cache).
    """
    return f"{time.time_ns() // 1_000_000:012x}{random_hex(10)}"


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append: a payload plus who did it and why.

    The ``event_id`` is fixed when the ``NewEvent`` is made, so appending the same object
    again after an ambiguous failure is recognised and writes nothing twice.
    """

    payload: Event
    actor: str = "system"
    reason: str | None = None
    correlation_id: str | None = None
    event_id: str = msgspec.field(default_factory=new_event_id)


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored in the log."""

    sequence: int
    """Global position in the log, strictly increasing."""
    event_id: str
    stream_id: str
    """The task id."""
    version: int
    """Position within the task's stream: 1, 2, 3 ... without gaps."""
    type: str
    schema_version: int
    """The schema version the event was written with (before upcasting)."""
    timestamp: float
    """Unix time of the append."""
    actor: str
    reason: str | None
    correlation_id: str | None
    payload: Event
    hash: str
    """Hex SHA-256 over the previous event's hash and this event's canonical bytes."""

    @property
    def recorded_at(self) -> datetime:
        """When the event was appended, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp, UTC)


Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a decoded payload of schema ``n`` into the shape of schema ``n + 1``."""


def _created_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    options = dict(old.get("options") or {})
    new: dict[str, Any] = {
        "type": "task.created",
        "agent": str(options.pop("agent", "default")),
        "prompt": str(options.pop("prompt", "")),
        "description": str(options.pop("description", "")),
    }
    if old.get("sessionId") is not None:
        new["session_id"] = old["sessionId"]
    if options:
        new["metadata"] = options
    return new


BUILTIN_UPCASTERS: Final[Mapping[tuple[str, int], Upcaster]] = {
    ("task.created", 1): _created_v1_to_v2,
}
"""Upcasters shipped with tasktrail, keyed by (tag, schema version they read)."""

_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(AnyEvent)


MAX_NESTING: Final = 200
"""The deepest nesting of lists and dicts a payload may hold. A fixed limit, far below
Python's recursion limit, so that a payload accepted here also encodes inside the task
record and decodes on every later read, whatever the call stack's depth there."""


def encode_payload(event: Event) -> bytes:
    """Canonical JSON of a payload: fields in declaration order, dict keys sorted.

    Refused with InvalidInputError: what JSON cannot carry exactly (a lone surrogate, a
    NaN or an infinity, which would come back as ``null``), lists and dicts nested deeper
    than :data:`MAX_NESTING`, and values of types JSON does not know.
    """
    try:
        encoded = _encoder.encode(event)
    except (
        TypeError,
        UnicodeEncodeError,
        OverflowError,
        RecursionError,
        msgspec.EncodeError,
    ) as err:
        raise InvalidInputError(f"cannot encode {type(event).__name__}: {err}") from err
    # Each level of nesting opens a bracket: few brackets in all, no deep nesting (C speed).
    if encoded.count(b"[") + encoded.count(b"{") > MAX_NESTING and _too_deep(event):
        raise InvalidInputError(
            f"cannot encode {type(event).__name__}: lists and dicts nested more than "
            f"{MAX_NESTING} levels deep"
        )
    if b"null" in encoded and _holds_non_finite(event):
        raise InvalidInputError(
            f"cannot encode {type(event).__name__}: it holds a NaN or an infinity, which "
            "JSON cannot carry (it would be read back as null)"
        )
    return encoded


_FREE_FORM: Final = frozenset({TaskCreated, TaskCompleted, ChildFinished})
"""Event types with fields of any JSON value (``metadata``, ``input``, ``result``)."""


def as_stored(event: Event, encoded: bytes) -> Event:
    """``event`` as a read of the log gives it back: its free-form values (a result, an
    input, metadata) are what JSON made of them (a tuple becomes a list, a datetime the
    ISO text msgspec writes), so a task folded at append time equals one replayed later."""
    if type(event) in _FREE_FORM and not _plain(event):
        decoded: Event = _decoder.decode(encoded)
        return decoded
    return event


_EXACT: Final = (str, int, float, bool, type(None))
"""Values JSON gives back as they were (a float's repr round-trips)."""


def _plain(event: Event) -> bool:
    """Whether the free-form values of ``event`` are already what JSON gives back."""
    if isinstance(event, TaskCreated):
        return not event.metadata and isinstance(event.input, _EXACT)
    if isinstance(event, TaskCompleted | ChildFinished):
        return isinstance(event.result, _EXACT)
    return False


def round_trips(value: object) -> bool:
    """Whether JSON gives ``value`` back exactly (no tuple, set, datetime, int dict key...)."""
    try:
        return bool(msgspec.json.decode(_encoder.encode(value)) == value)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        return False


def _too_deep(value: object) -> bool:
    """Whether lists, tuples or dicts nest more than ``MAX_NESTING`` levels in ``value``."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_NESTING:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, msgspec.Struct):
            stack.extend((child, depth) for child in msgspec.structs.astuple(item))
    return False


def _holds_non_finite(value: object) -> bool:
    """Whether a NaN or an infinity hides anywhere in ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, msgspec.Struct):
            stack.extend(msgspec.structs.astuple(item))
    return False


def decode_payload(
    event_type: str,
    schema_version: int,
    data: bytes | str,
    *,
    sequence: int = 0,
    upcasters: Mapping[tuple[str, int], Upcaster] = BUILTIN_UPCASTERS,
) -> Event:
    """Decode a stored payload into the current shape of its event type.

    Raises :class:`UnknownEventTypeError` for a tag or schema version this tasktrail does
    not know, :class:`CorruptEventError` when the bytes do not decode.
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventTypeError(event_type, f"at sequence {sequence}")
    current = cls.schema_version
    try:
        if schema_version == current:
            event: Event = _decoder.decode(data)
            if type(event) is not cls:
                raise CorruptEventError(sequence, f"payload tag does not match {event_type!r}")
            return event
        if schema_version > current or schema_version < 1:
            raise UnknownEventTypeError(
                event_type,
                f"schema version {schema_version} at sequence {sequence}; this tasktrail "
                f"reads up to {current}: upgrade tasktrail",
            )
        raw = msgspec.json.decode(data)
        if not isinstance(raw, dict):
            raise CorruptEventError(sequence, "payload is not a JSON object")
        for version in range(schema_version, current):
            upcast = upcasters.get((event_type, version))
            if upcast is None:
                raise UnknownEventTypeError(
                    event_type, f"no upcaster from schema version {version}"
                )
            try:
                raw = upcast(raw)
            except Exception as err:
                raise CorruptEventError(
                    sequence, f"upcasting {event_type!r} from schema {version} failed: {err!r}"
                ) from err
            if not isinstance(raw, dict):
                raise CorruptEventError(
                    sequence,
                    f"the upcaster of {event_type!r} from schema {version} "
                    f"returned {type(raw).__name__}, not a dict",
                )
        raw["type"] = event_type
        return msgspec.convert(raw, cls)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as err:
        raise CorruptEventError(sequence, str(err)) from err
