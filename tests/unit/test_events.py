"""Event encoding, decoding and upcasting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from tasktrail import (
    CorruptEventError,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    TaskCreated,
    TaskState,
    UnknownEventTypeError,
)
from tasktrail.events import EVENT_TYPES, MAX_NESTING, decode_payload, encode_payload
from tasktrail.store._chain import GENESIS, event_hash

# Tags are part of the stored format: they never change.
STABLE_TAGS = {
    "task.created",
    "task.claimed",
    "task.started",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "task.requeued",
    "task.cancel_requested",
    "task.output",
    "task.progress",
    "task.child_finished",
}


def test_tags_are_stable() -> None:
    """Every event type keeps the tag it was released with."""
    assert set(EVENT_TYPES) == STABLE_TAGS


def test_encoding_is_canonical() -> None:
    """Dict keys are sorted, so equal payloads encode to equal bytes."""
    one = TaskCreated(agent="a", metadata={"b": 1, "a": 2})
    two = TaskCreated(agent="a", metadata={"a": 2, "b": 1})
    assert encode_payload(one) == encode_payload(two)
    assert encode_payload(one).startswith(b'{"type":"task.created","agent":"a"')


def test_unknown_type_is_a_typed_error() -> None:
    """A tag this version does not know raises UnknownEventTypeError."""
    with pytest.raises(UnknownEventTypeError, match=r"task\.teleported"):
        decode_payload("task.teleported", 1, b"{}")


def test_newer_schema_asks_for_an_upgrade() -> None:
    """A schema version from the future is refused with a clear message."""
    with pytest.raises(UnknownEventTypeError, match="upgrade tasktrail"):
        decode_payload("task.created", 99, b'{"type":"task.created","agent":"a"}')


def test_garbage_payload_is_a_corrupt_event() -> None:
    """Bytes that are not the event's JSON raise CorruptEventError, not a msgspec error."""
    with pytest.raises(CorruptEventError) as info:
        decode_payload("task.failed", 1, b"{not json", sequence=7)
    assert info.value.sequence == 7


def test_created_v1_is_upcast() -> None:
    """The seed-shaped TaskCreated (schema 1) decodes into the current shape."""
    old = (
        b'{"options":{"agent":"coder","prompt":"do it","description":"d","model":"x"},'
        b'"sessionId":"s1"}'
    )
    event = decode_payload("task.created", 1, old)
    assert event == TaskCreated(
        agent="coder", prompt="do it", description="d", session_id="s1", metadata={"model": "x"}
    )


async def test_old_log_replays_after_upgrade(db_path: Path) -> None:
    """A log holding schema-1 events (written by an older version) replays, rebuilds, verifies."""
    async with SQLiteEventStore(db_path):
        pass  # create the schema
    old = msgspec.json.encode({"options": {"agent": "coder", "prompt": "old shape"}})
    header = ("legacy-1", 1, "task.created", 1, 1_700_000_000.0, "seed", None, None)
    digest = event_hash(GENESIS, (1, "e1", *header), old)
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "INSERT INTO events VALUES (1, 'e1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*header, old.decode(), digest),
        )
    async with SQLiteEventStore(db_path) as store:
        assert await store.rebuild() == 1
        task = await store.get_task("legacy-1")
        assert task is not None
        assert (task.agent, task.prompt, task.state) == ("coder", "old shape", TaskState.PENDING)
        (event,) = await store.history("legacy-1")
        assert event.schema_version == 1
        assert isinstance(event.payload, TaskCreated)
        assert (await store.verify()).events == 1
        # The upgraded task keeps living in the current shape.
        from tasktrail import TaskClaimed

        result = await store.append("legacy-1", [NewEvent(TaskClaimed(worker_id="w", attempt=1))])
        assert result.task.state is TaskState.STARTING


def test_failing_upcaster_is_a_corrupt_event() -> None:
    """An upcaster that cannot read a stored shape raises CorruptEventError."""
    with pytest.raises(CorruptEventError, match="upcasting"):
        decode_payload("task.created", 1, b'{"options": "abc"}', sequence=3)


def _nested(levels: int) -> object:
    value: object = "bottom"
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def test_nesting_is_limited_to_max_nesting() -> None:
    """Lists and dicts nested MAX_NESTING deep encode; one level more is refused."""
    deepest = TaskCreated(agent="a", prompt="p", metadata={"v": _nested(MAX_NESTING - 1)})
    assert encode_payload(deepest)
    too_deep = TaskCreated(agent="a", prompt="p", metadata={"v": _nested(MAX_NESTING)})
    with pytest.raises(InvalidInputError, match="nested more than"):
        encode_payload(too_deep)
    wide = TaskCreated(agent="a", prompt="p", metadata={"rows": [{"n": i} for i in range(500)]})
    assert encode_payload(wide)  # many brackets, shallow: accepted
