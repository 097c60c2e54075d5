"""Round trips: every event type through its JSON encoding and through the store."""

from __future__ import annotations

import asyncio
import itertools
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasktrail import (
    NewEvent,
    SQLiteEventStore,
    TaskClaimed,
    TaskCreated,
    TaskStarted,
    TaskState,
    Trigger,
)
from tasktrail.events import EVENT_TYPES, Event, decode_payload, encode_payload
from tasktrail.lifecycle import next_state

# Text is anything UTF-8 can carry: every code point except the lone surrogates.
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(
    st.none() | st.booleans() | INT64 | FLOATS | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
# Text stored as a column (the envelope's, and a task's agent, parent and concurrency key)
# holds no NUL: every backend refuses it there (tests/store/test_contract.py).
COLUMN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
COLUMN_FIELDS = ("agent", "parent_id", "concurrency_key")
# What str.isprintable() accepts: no control, format or separator characters but ' '.
PRINTABLE = st.characters(codec="utf-8", exclude_categories=["C", "Z"])


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A strategy for one field annotation of an event Struct."""
    if annotation is Any:
        return JSON
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return INT64
    if annotation is float:
        return FLOATS
    if annotation is str:
        return TEXT
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return st.one_of(*(strategy_for(arg) for arg in typing.get_args(annotation)))
    if typing.get_origin(annotation) is dict:
        key, value = typing.get_args(annotation)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=4)
    raise TypeError(f"no strategy for field type {annotation!r}: extend strategy_for")


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Instances of ``cls`` with every field, optional or not, drawn."""
    fields = {f.name: strategy_for(f.type) for f in msgspec.structs.fields(cls)}
    for f in msgspec.structs.fields(cls):
        if f.name in COLUMN_FIELDS:
            fields[f.name] = COLUMN_TEXT if f.type is str else st.none() | COLUMN_TEXT
    return st.builds(cls, **fields)


def new_events() -> st.SearchStrategy[dict[str, Any]]:
    """The envelope of a NewEvent: actor, reason, correlation id and event id."""
    return st.fixed_dictionaries(
        {
            "actor": st.text(PRINTABLE, min_size=1, max_size=20),
            "reason": st.none() | COLUMN_TEXT,
            "correlation_id": st.none() | COLUMN_TEXT,
            "event_id": st.text(
                st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40
            ),
        }
    )


# The events that take a new task forward, for building a legal prefix.
FORWARD: dict[Trigger, Event] = {
    Trigger.CREATE: TaskCreated(agent="a"),
    Trigger.CLAIM: TaskClaimed(worker_id="w", attempt=1),
    Trigger.START: TaskStarted(),
}


def prefix_for(trigger: Trigger) -> list[Event]:
    """The shortest run of FORWARD events after which ``trigger`` is legal (BFS)."""
    frontier: list[tuple[TaskState | None, list[Trigger]]] = [(None, [])]
    while frontier:
        state, path = frontier.pop(0)
        if next_state(state, False, trigger) is not None:
            return [FORWARD[t] for t in path]
        for step in FORWARD:
            after = next_state(state, False, step)
            if after is not None and after is not state:
                frontier.append((after, [*path, step]))
    raise AssertionError(f"no FORWARD path makes {trigger} legal: extend FORWARD")


EVENT_TAGS = [pytest.param(tag, id=tag) for tag in sorted(EVENT_TYPES)]


@pytest.mark.parametrize("tag", EVENT_TAGS)
def test_every_event_type_has_a_legal_prefix(tag: str) -> None:
    """The store round trip below can reach a state where each event type is legal."""
    trigger = EVENT_TYPES[tag].trigger
    state = None
    for event in prefix_for(trigger):
        state = next_state(state, False, event.trigger)
        assert state is not None
    assert next_state(state, False, trigger) is not None


@pytest.mark.parametrize("tag", EVENT_TAGS)
def test_payload_encoding_round_trips(tag: str) -> None:
    """encode_payload then decode_payload gives back an equal event of the same type."""
    cls = EVENT_TYPES[tag]

    @given(event=events_of(cls))
    def check(event: Event) -> None:
        data = encode_payload(event)
        decoded = decode_payload(tag, cls.schema_version, data)
        assert type(decoded) is cls
        assert decoded == event
        assert encode_payload(decoded) == data

    check()


@pytest.mark.parametrize("tag", EVENT_TAGS)
def test_store_round_trips_events_and_tasks(tag: str, tmp_path: Path) -> None:
    """An appended event reads back equal, and get_task equals the task the append returned."""
    cls = EVENT_TYPES[tag]
    numbers = itertools.count()
    with asyncio.Runner() as runner:
        store = runner.run(SQLiteEventStore(tmp_path / "roundtrip.db").open())
        try:

            @given(
                event=events_of(cls),
                envelope=new_events(),
                name=st.text(PRINTABLE, max_size=40),
            )
            def check(event: Event, envelope: dict[str, Any], name: str) -> None:
                task_id = f"t{next(numbers)}-{name}"
                runner.run(_append_and_read_back(store, task_id, event, envelope))

            check()
        finally:
            runner.run(store.close())


async def _append_and_read_back(
    store: SQLiteEventStore, task_id: str, event: Event, envelope: dict[str, Any]
) -> None:
    tag = type(event).__struct_config__.tag
    prefix = [NewEvent(p) for p in prefix_for(type(event).trigger)]
    # Event ids are global: make the drawn one unique to this example.
    new = NewEvent(event, **{**envelope, "event_id": f"{task_id}/{envelope['event_id']}"})
    result = await store.append(task_id, [*prefix, new], expected_version=0)

    recorded = (await store.read_stream(task_id))[-1]
    assert recorded.payload == event
    assert type(recorded.payload) is type(event)
    assert (recorded.type, recorded.schema_version) == (tag, type(event).schema_version)
    assert (recorded.event_id, recorded.actor) == (new.event_id, new.actor)
    assert (recorded.reason, recorded.correlation_id) == (new.reason, new.correlation_id)
    assert (recorded.stream_id, recorded.version) == (task_id, len(prefix) + 1)
    assert (recorded.sequence, recorded.version) == (result.sequence, result.version)

    assert await store.get_task(task_id) == result.task
    assert await store.state_at(task_id) == result.task
    report = await store.verify()
    assert report.head_sequence == result.sequence
