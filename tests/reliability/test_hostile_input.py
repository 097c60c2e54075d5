"""Scenario 7, hostile input: each value is accepted and round-trips exactly, or is refused
with a typed error before anything is written. No SQL is ever built from values.

Sizes: CI 10,500 examples over four tests; ``TASKTRAIL_HOSTILE_SCALE`` multiplies them
(soak: 10).
"""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenario import Figures, assert_clean, size

from tasktrail import (
    CorruptDatabaseError,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    TaskCreated,
    TaskExistsError,
    TasktrailError,
)
from tasktrail.events import EVENT_TYPES, decode_payload

SCALE = size("TASKTRAIL_HOSTILE_SCALE", 1, 10)


def hostile(examples: int) -> Any:
    """Hypothesis settings for ``examples`` examples (times the scale)."""
    return settings(
        max_examples=int(examples * SCALE),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


NASTY = [
    "'", '"', "';--", "a'); DROP TABLE events;--", "\x00", "a\x00b", "\ud800", "x\udfffy",
    " lead", "trail ", "\n", "%s", "?", ":name", "$1", "\\", "\u202e", "x" * 10_000, "",
    "🙂", "名前", "\ufeff", "NULL",
]  # fmt: skip
ANY_TEXT = st.text(st.characters(), max_size=300)  # every code point, lone surrogates too
TASK_IDS = st.one_of(st.sampled_from(NASTY), ANY_TEXT, st.text(max_size=20).map(lambda s: s * 20))
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # far beyond 64 bits too
    st.floats(),  # NaN and infinities too
    ANY_TEXT,
    st.sampled_from(NASTY),
)
NESTED = st.recursive(
    LEAVES,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(ANY_TEXT, kids, max_size=3),
    max_leaves=20,
)
# Deep and oversized values are built in the test from a drawn size (Hypothesis would try
# to print them).
DEPTHS = st.integers(0, 30_000).map(lambda n: n // 10 if n % 10 == 0 and n else None)
SIZES = st.integers(0, 40).map(lambda n: n if 1 <= n <= 3 else None)


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


class Loop:
    """One event loop and one open store (synchronous=OFF: input, not durability) per test."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = SQLiteEventStore(path, synchronous="OFF", max_event_bytes=1 << 20)
        self.run(self.store.open())
        self.tried = self.accepted = 0

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` to its end on this loop."""
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        """Close the store and the loop."""
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture
def loop(db_path: Path) -> Iterator[Loop]:
    """A store on a new file with its own event loop (Hypothesis calls the test body)."""
    opened = Loop(db_path)
    yield opened
    opened.close()


def test_hostile_task_ids(loop: Loop, db_path: Path, figures: Figures) -> None:
    """A task id is stored and read back exactly, or refused before any write."""

    @hostile(2500)
    @given(task_id=TASK_IDS)
    def attempt(task_id: str) -> None:
        loop.tried += 1
        store = loop.store
        head = loop.run(store.head())
        try:
            done = loop.run(store.append(task_id, [NewEvent(TaskCreated(agent="a"))]))
        except InvalidInputError:
            assert loop.run(store.head()) == head
            return
        except TaskExistsError:  # the same id drawn twice
            return
        loop.accepted += 1
        assert done.sequence == head + 1
        task = loop.run(store.get_task(task_id))
        assert task is not None
        assert task.id == task_id
        (event,) = loop.run(store.read_stream(task_id))
        assert event.stream_id == task_id

    attempt()
    assert_clean(db_path)
    figures.add("7 hostile input", inputs=loop.tried, accepted=loop.accepted)


def test_hostile_payloads(loop: Loop, db_path: Path, figures: Figures) -> None:
    """A payload round-trips exactly, or is refused with a typed error before any write."""
    counter = iter(range(1 << 40))

    @hostile(1500)
    @given(
        prompt=st.one_of(ANY_TEXT, st.sampled_from(NASTY)),
        metadata=NESTED,
        depth=DEPTHS,
        megabytes=SIZES,
    )
    def attempt(prompt: str, metadata: Any, depth: int | None, megabytes: int | None) -> None:
        loop.tried += 1
        if depth is not None:
            metadata = _nest(depth)
        if megabytes is not None:
            metadata = "y" * (megabytes * 700_000)
        store = loop.store
        head = loop.run(store.head())
        task_id = f"task-{next(counter)}"
        payload = TaskCreated(agent="a", prompt=prompt, metadata={"value": metadata})
        try:
            loop.run(store.append(task_id, [NewEvent(payload)]))
        except InvalidInputError:
            assert loop.run(store.head()) == head
            return
        loop.accepted += 1
        (event,) = loop.run(store.read_stream(task_id))
        assert _same(event.payload, payload)
        task = loop.run(store.get_task(task_id))
        assert task is not None
        assert _same(task.metadata, payload.metadata)
        assert task.prompt == prompt

    attempt()
    assert_clean(db_path)
    figures.add("7 hostile input", inputs=loop.tried, accepted=loop.accepted)


def _same(left: Any, right: Any) -> bool:
    """Exact equality of decoded values: same types, same content (no recursion limit)."""
    stack = [(left, right)]
    while stack:
        a, b = stack.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, msgspec.Struct):
            stack.append((msgspec.structs.asdict(a), msgspec.structs.asdict(b)))
        elif isinstance(a, dict):
            if a.keys() != b.keys():
                return False
            stack.extend((a[key], b[key]) for key in a)
        elif isinstance(a, list | tuple):
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif a != b:
            return False
    return True


def test_hostile_raw_event_bytes(figures: Figures) -> None:
    """Raw bytes stored as an event decode to an event, or raise a typed error."""
    tried = decoded = 0

    @hostile(5000)
    @given(
        event_type=st.one_of(st.sampled_from(sorted(EVENT_TYPES)), ANY_TEXT),
        schema_version=st.integers(-5, 5),
        data=st.one_of(
            st.binary(max_size=200),
            st.sampled_from(
                [b"{}", b"null", b'{"type":"task.created"}', b'{"type":"task.created","agent":1}']
            ),
            NESTED.map(lambda value: repr(value).encode("utf-8", "surrogatepass")),
        ),
    )
    def attempt(event_type: str, schema_version: int, data: bytes) -> None:
        nonlocal tried, decoded
        tried += 1
        try:
            event = decode_payload(event_type, schema_version, data, sequence=7)
        except (CorruptDatabaseError, InvalidInputError):
            return  # typed; anything else fails the test
        decoded += 1
        assert type(event) is EVENT_TYPES[event_type]

    attempt()
    figures.add("7 hostile input", inputs=tried, accepted=decoded)


def test_hostile_rows_read_through_the_store(loop: Loop, db_path: Path, figures: Figures) -> None:
    """Rows of raw bytes written behind tasktrail's back read as events or typed errors."""
    raw = sqlite3.connect(db_path, isolation_level=None)
    counter = iter(range(1, 1 << 40))

    @hostile(1500)
    @given(
        event_type=st.one_of(st.sampled_from(sorted(EVENT_TYPES)), ANY_TEXT),
        data=st.binary(max_size=120),
    )
    def attempt(event_type: str, data: bytes) -> None:
        loop.tried += 1
        n = next(counter)
        raw.execute(
            "INSERT INTO events VALUES (?, ?, 'raw', ?, CAST(? AS TEXT), 1, 0, 'x', NULL, NULL, "
            "CAST(? AS TEXT), '')",
            (1_000_000 + n, f"raw-{n}", n, event_type.encode("utf-8", "surrogatepass"), data),
        )
        try:
            loop.run(store_read(loop.store, 1_000_000 + n))
            loop.accepted += 1
        except TasktrailError:
            pass

    try:
        attempt()
    finally:
        raw.close()
    figures.add("7 hostile input", inputs=loop.tried, accepted=loop.accepted)


async def store_read(store: SQLiteEventStore, sequence: int) -> None:
    """Read the one event at ``sequence`` through the store."""
    (event,) = await store.read_all(after=sequence - 1, limit=1)
    assert event.sequence == sequence


# The only expressions allowed inside an f-string of SQL: placeholders, column lists and
# clauses made of constants, never a value from a caller.
SAFE_SQL_PARTS = {
    "EVENT_COLUMNS",  # a constant column list
    "marks(len(chunk))",  # "?,?,?" placeholders
    "where",  # " AND ".join of clauses with placeholders
    "' AND '.join(clauses)",
    "order",  # "ASC" or "DESC"
    "synchronous",  # checked against OFF/NORMAL/FULL/EXTRA by the constructor
    "number",  # a migration's number
    "int(busy_timeout * 1000)",
    # PostgreSQL: constant column lists and "$n::type[]" parameters
    "_TASK_COLUMNS",
    "TASK_COLUMNS",
    "_unnest(_EVENT_TYPES, 1)",
    "_unnest(_TASK_TYPES, first)",
    "_insert_tasks(13)",
    "WORKER_COLUMNS",  # a constant column list
    "CONTROL_COLUMNS",  # a constant column list (store/_controls.py)
    "_sort_column(sort)",  # a column name looked up in SORTS; anything else is refused
    "_source(p, filters)",  # "tasks", or "tasks INDEXED BY tasks_finished"
    "source",  # the same
    # a claim's queue read: one part per agent, each itself an f-string this test checks
    "_queue_part(page, p, order=order, agent=agent)",
    "n",  # the part's number from enumerate(), naming its subquery
    "TASK_UPSERT",  # a constant ON CONFLICT clause (store/_plan.py)
    "self._EVENT_COLUMNS",  # the backend's constant column list (store/_backend.py)
}
# ... and placeholders handed out by a Params (store/_query.py): "?" or "$n", never a value.
PLACEHOLDER = re.compile(r"^p\.add\(.*\)$")


def test_no_sql_is_built_from_values() -> None:
    """Every f-string of SQL in the store interpolates only placeholders and constants."""
    source = Path(__file__).resolve().parents[2] / "src" / "tasktrail" / "store"
    seen = set()
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr) and any(
                isinstance(part, ast.Constant) and _looks_like_sql(part.value)
                for part in node.values
            ):
                for part in node.values:
                    if isinstance(part, ast.FormattedValue):
                        seen.add((path.name, ast.unparse(part.value)))
    unsafe = {
        (name, expr)
        for name, expr in seen
        if expr not in SAFE_SQL_PARTS and not PLACEHOLDER.match(expr)
    }
    assert unsafe == set()


def _looks_like_sql(text: object) -> bool:
    return isinstance(text, str) and any(
        word in text for word in ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "PRAGMA ", "WHERE ")
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param({"deep": [1.0, -float("inf")]}, id="nested-inf"),
        pytest.param(_nest(5000), id="nesting-5000"),
    ],
)
async def test_values_json_cannot_carry_are_refused(store: SQLiteEventStore, value: Any) -> None:
    """NaN, infinities (read back as null) and too deep nesting are refused; nothing written."""
    with pytest.raises(InvalidInputError, match="cannot encode"):
        await store.append("t", [NewEvent(TaskCreated(agent="a", metadata={"v": value}))])
    assert await store.head() == 0
