"""Changes made to the database behind tasktrail's back are refused or detected.

Every test edits the file with the stdlib ``sqlite3`` module, as an attacker (or a
well-meaning admin) would, then checks what tasktrail makes of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from checker import check
from scenario import Figures

from tasktrail import (
    CorruptDatabaseError,
    CorruptEventError,
    NewEvent,
    SQLiteEventStore,
    TamperedLogError,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    TasktrailError,
    UnknownEventTypeError,
    VerifyReport,
)

GENESIS = "0" * 64
EVENTS = 10


@pytest.fixture
async def log(db_path: Path) -> Path:
    """A closed database of four tasks whose ten events interleave in the log.

    Sequence: 1 a.created 2 b.created 3 c.created 4 d.created 5 a.claimed 6 b.claimed
    7 c.claimed 8 a.started 9 b.started 10 a.completed
    """
    paths = {
        "a": [
            TaskCreated(agent="x"),
            TaskClaimed(worker_id="w", attempt=1),
            TaskStarted(),
            TaskCompleted(result={"ok": True}),
        ],
        "b": [TaskCreated(agent="x"), TaskClaimed(worker_id="w", attempt=1), TaskStarted()],
        "c": [TaskCreated(agent="x"), TaskClaimed(worker_id="w", attempt=1)],
        "d": [TaskCreated(agent="x", prompt="last")],
    }
    async with SQLiteEventStore(db_path) as store:
        for step in range(4):
            for task_id, events in paths.items():
                if step < len(events):
                    await store.append(
                        task_id, [NewEvent(events[step], reason="setup")], expected_version=step
                    )
        assert await store.head() == EVENTS
    return db_path


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection in autocommit mode."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of the events table, in order."""
    with connect(path) as db:
        return db.execute("SELECT * FROM events ORDER BY seq").fetchall()


def drop_triggers(path: Path) -> None:
    """Remove the append-only triggers, as someone with write access to the file could."""
    with connect(path) as db:
        db.execute("DROP TRIGGER events_append_only_update")
        db.execute("DROP TRIGGER events_append_only_delete")


def chain_hash(previous: str, row: tuple[Any, ...]) -> str:
    """A row's hash by the documented formula, recomputed without tasktrail's code."""
    header = msgspec.json.encode(list(row[:10]))
    data = row[10].encode() if isinstance(row[10], str) else row[10]
    return hashlib.sha256(previous.encode() + b"\n" + header + b"\n" + data).hexdigest()


async def verify(path: Path) -> Any:
    """Open the file with tasktrail and verify its chain."""
    async with SQLiteEventStore(path) as store:
        return await store.verify()


async def verify_error(path: Path) -> TamperedLogError:
    """The TamperedLogError that verify() raises for the file."""
    with pytest.raises(TamperedLogError) as caught:
        await verify(path)
    return caught.value


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE events SET data = '{}' WHERE seq = 5", id="update-data"),
        pytest.param("UPDATE events SET hash = 'forged' WHERE seq = 5", id="update-hash"),
        pytest.param("UPDATE events SET seq = 99 WHERE seq = 10", id="update-seq"),
        pytest.param("UPDATE events SET actor = 'mallory'", id="update-all"),
        pytest.param("DELETE FROM events WHERE seq = 5", id="delete-one"),
        pytest.param("DELETE FROM events", id="delete-all"),
    ],
)
async def test_triggers_refuse_update_and_delete(log: Path, statement: str) -> None:
    """UPDATE and DELETE on the log fail with an append-only IntegrityError; nothing changes."""
    before = rows(log)
    with connect(log) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute(statement)
    assert rows(log) == before
    report = await verify(log)
    assert (report.events, report.append_only) == (EVENTS, True)


def test_documented_formula_recomputes_every_stored_hash(log: Path) -> None:
    """Each stored hash is sha256(previous hash, header JSON, payload bytes), as documented."""
    previous = GENESIS
    for row in rows(log):
        assert chain_hash(previous, row) == row[11]
        previous = row[11]


async def test_dropped_triggers_show_in_the_report(log: Path) -> None:
    """verify() passes on an untouched log but reports that it is no longer append-only."""
    drop_triggers(log)
    report = await verify(log)
    assert (report.events, report.append_only) == (EVENTS, False)


def _flip_data_byte(value: Any) -> Any:
    data = bytearray(value.encode())
    middle = len(data) // 2
    assert data[middle] < 0x80, "the fixture's payloads are ASCII"
    data[middle] ^= 0x01
    return data.decode()


EDITS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "data-byte": ("data", _flip_data_byte),
    "actor": ("actor", lambda _: "mallory"),
    "reason": ("reason", lambda _: "forged"),
    "time": ("recorded_at", lambda value: value + 1.0),
    "event-id": ("event_id", lambda value: value[::-1]),
    "version": ("version", lambda value: value + 100),
}


@pytest.mark.parametrize("edit", [pytest.param(name, id=name) for name in EDITS])
@pytest.mark.parametrize("sequence", [pytest.param(s, id=f"seq{s}") for s in (1, 6, EVENTS)])
async def test_edited_row_is_named(log: Path, edit: str, sequence: int) -> None:
    """Changing one field of one row (one byte of its payload, say) names that row."""
    column, change = EDITS[edit]
    drop_triggers(log)
    with connect(log) as db:
        (value,) = db.execute(f"SELECT {column} FROM events WHERE seq = ?", (sequence,)).fetchone()
        db.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (change(value), sequence))
    error = await verify_error(log)
    assert error.sequence == sequence
    assert f"sequence {sequence}" in str(error)


@pytest.mark.parametrize("sequence", [pytest.param(s, id=f"seq{s}") for s in (1, 2, 5, 9)])
async def test_deleted_row_is_named(log: Path, sequence: int) -> None:
    """Deleting a row that others follow names the missing sequence number."""
    drop_triggers(log)
    with connect(log) as db:
        db.execute("DELETE FROM events WHERE seq = ?", (sequence,))
    error = await verify_error(log)
    assert error.sequence == sequence
    assert "missing" in str(error)


async def test_truncated_tail_changes_the_head_hash(log: Path) -> None:
    """Dropping the last event leaves a valid chain, so keep head_hash to notice it."""
    kept = await verify(log)
    drop_triggers(log)
    with connect(log) as db:
        db.execute("DELETE FROM events WHERE seq = ?", (EVENTS,))
    report = await verify(log)
    assert report.head_sequence == EVENTS - 1
    assert report.head_hash != kept.head_hash


@pytest.mark.parametrize("sequence", [pytest.param(s, id=f"seq{s}") for s in (1, 5, EVENTS - 1)])
async def test_rehashed_row_names_the_next_one(log: Path, sequence: int) -> None:
    """A row edited and re-hashed to match is caught at the next row, whose chain broke."""
    drop_triggers(log)
    before = rows(log)
    previous = GENESIS if sequence == 1 else before[sequence - 2][11]
    edited = list(before[sequence - 1])
    edited[10] = _flip_data_byte(edited[10])
    edited[11] = chain_hash(previous, tuple(edited))
    with connect(log) as db:
        db.execute(
            "UPDATE events SET data = ?, hash = ? WHERE seq = ?", (edited[10], edited[11], sequence)
        )
    error = await verify_error(log)
    assert error.sequence == sequence + 1


# Sequence 6 is b's claim; the bad contents below replace its payload.
BAD_PAYLOADS = [
    pytest.param(6, 1, "this is not json", id="not-json"),
    pytest.param(6, 1, '{"type":"task.claimed","worker_id":"w"', id="truncated"),
    pytest.param(6, 1, '{"type":"task.claimed","attempt":"one"}', id="wrong-shape"),
    pytest.param(6, 1, '{"type":"task.created","agent":"x"}', id="wrong-tag"),
    pytest.param(6, 1, "null", id="null"),
    pytest.param(2, 1, "[1, 2, 3]", id="old-schema-not-an-object"),
    pytest.param(
        6, 1, b'{"type":"task.claimed","worker_id":"\xff","attempt":1}', id="invalid-utf8"
    ),
]


@pytest.mark.parametrize(("sequence", "schema", "data"), BAD_PAYLOADS)
async def test_undecodable_payload_is_corrupt_event_error(
    log: Path, sequence: int, schema: int, data: str | bytes
) -> None:
    """history() of a row that does not decode raises CorruptEventError naming the row."""
    drop_triggers(log)
    with connect(log) as db:
        db.execute(
            "UPDATE events SET data = ?, schema_version = ? WHERE seq = ?",
            (data, schema, sequence),
        )
    async with SQLiteEventStore(log) as store:
        with pytest.raises(CorruptEventError) as caught:
            await store.history("b")
        assert caught.value.sequence == sequence
        assert isinstance(caught.value, TasktrailError)
        assert not isinstance(caught.value, msgspec.MsgspecError)
        assert f"sequence {sequence}" in str(caught.value)
        # The other tasks still read.
        assert [e.sequence for e in await store.history("d")] == [4]


READERS: dict[str, Callable[[SQLiteEventStore], Any]] = {
    "history": lambda store: store.history("b"),
    "read_stream": lambda store: store.read_stream("b"),
    "read_all": lambda store: store.read_all(),
    "state_at": lambda store: store.state_at("b", version=2),
    "rebuild": lambda store: store.rebuild(),
    "check_projection": lambda store: store.check_projection(),
}


@pytest.mark.parametrize("reader", [pytest.param(name, id=name) for name in READERS])
async def test_every_reader_reports_a_corrupt_event(log: Path, reader: str) -> None:
    """Every way of reading events raises CorruptEventError for an undecodable row."""
    drop_triggers(log)
    with connect(log) as db:
        db.execute("UPDATE events SET data = 'garbage' WHERE seq = 6")
    async with SQLiteEventStore(log) as store:
        with pytest.raises(CorruptEventError) as caught:
            await READERS[reader](store)
        assert caught.value.sequence == 6
        # A failed rebuild changed nothing: the projection still answers.
        task = await store.get_task("b")
        assert task is not None
        assert task.version == 3


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is a text file, not a database\n" * 40, id="text"),
        pytest.param(b"\x00" * 4096, id="zeros"),
        pytest.param(b"SQLite format 3\x00" + b"\xab" * 4080, id="bad-header"),
    ],
)
def test_not_a_database_is_corrupt_database_error(db_path: Path, content: bytes) -> None:
    """Opening a file that is not a database raises CorruptDatabaseError and leaves it alone."""
    db_path.write_bytes(content)
    with pytest.raises(CorruptDatabaseError) as caught:
        asyncio.run(SQLiteEventStore(db_path).open())
    assert str(db_path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert db_path.read_bytes() == content


@pytest.mark.parametrize(
    ("event_type", "schema"),
    [
        pytest.param("task.exploded", 1, id="unknown-tag"),
        pytest.param("task.claimed", 99, id="future-schema"),
        pytest.param("task.created", 0, id="schema-zero"),
    ],
)
async def test_unknown_event_type_row_is_refused_on_read(
    log: Path, event_type: str, schema: int
) -> None:
    """A row of a type or schema this tasktrail does not know raises UnknownEventTypeError."""
    with connect(log) as db:  # INSERT is allowed: the log only grows
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (EVENTS + 1, "hand-made", "d", 2, event_type, schema, 0.0, "x", None, None, "{}", ""),
        )
    async with SQLiteEventStore(log) as store:
        with pytest.raises(UnknownEventTypeError) as caught:
            await store.history("d")
        assert caught.value.event_type == event_type
        assert isinstance(caught.value, TasktrailError)
        assert [e.sequence for e in await store.history("c")] == [3, 7]


async def test_damaged_projection_row_is_found_and_rebuilt(log: Path) -> None:
    """check_projection() names a damaged tasks row, and rebuild() restores it from the log."""
    with connect(log) as db:  # the projection has no triggers: it is derived data
        db.execute("UPDATE tasks SET record = 'garbage' WHERE id = 'b'")
    async with SQLiteEventStore(log) as store:
        assert await store.check_projection() == ["b"]
        assert await store.rebuild() == 4
        assert await store.check_projection() == []
        task = await store.get_task("b")
        assert task is not None
        assert task.version == 3


PROJECTION_READERS: dict[str, Callable[[SQLiteEventStore], Any]] = {
    "get_task": lambda store: store.get_task("b"),
    "list_tasks": lambda store: store.list_tasks(),
    "append": lambda store: store.append("b", [NewEvent(TaskCompleted())], expected_version=3),
}


@pytest.mark.parametrize("reader", [pytest.param(name, id=name) for name in PROJECTION_READERS])
async def test_damaged_projection_row_is_a_tasktrail_error(log: Path, reader: str) -> None:
    """Reading or appending to a task whose projection row is damaged raises a TasktrailError."""
    with connect(log) as db:
        db.execute("UPDATE tasks SET record = 'garbage' WHERE id = 'b'")
    async with SQLiteEventStore(log) as store:
        with pytest.raises(CorruptDatabaseError):
            await PROJECTION_READERS[reader](store)
        assert await store.head() == EVENTS


# -- exhaustive tampering (scenario 6) --------------------------------------------------------

COLUMNS = [
    "seq", "event_id", "stream_id", "version", "type", "schema_version", "recorded_at",
    "actor", "reason", "correlation_id", "data", "hash",
]  # fmt: skip


def first_difference(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> int:
    """The sequence number (position + 1) of the first row that differs, in seq order."""
    for position, (old, new) in enumerate(zip(before, after, strict=False)):
        if old != new:
            return position + 1
    return min(len(before), len(after)) + 1


def byte_changes(value: Any) -> Iterator[Any]:
    """Every single-byte change of a stored value (one byte replaced), of the same type."""
    if value is None:
        yield "x"  # a NULL column given a value
        return
    if isinstance(value, int | float):
        text = repr(value).encode()
        kind: type = type(value)
    else:
        text, kind = (value if isinstance(value, bytes) else str(value).encode()), str
    for index in range(len(text)):
        for replacement in (text[index] ^ 0x01, ord("7") if text[index] != ord("7") else ord("3")):
            changed = text[:index] + bytes([replacement]) + text[index + 1 :]
            if kind is str:
                yield changed
                continue
            try:
                yield kind(changed.decode())
            except ValueError:
                continue


async def test_every_single_byte_change_is_named(log: Path, figures: Figures) -> None:
    """Every one-byte change of any column of any event is detected at the first bad row."""
    drop_triggers(log)
    before = rows(log)
    changes = refused = 0
    async with SQLiteEventStore(log) as store:
        with connect(log) as db:
            db.execute("PRAGMA synchronous = OFF")
            for row in before:
                for column, value in zip(COLUMNS, row, strict=True):
                    for changed in byte_changes(value):
                        cast = "CAST(? AS TEXT)" if isinstance(changed, bytes) else "?"
                        try:
                            db.execute(
                                f"UPDATE events SET {column} = {cast} WHERE seq = ?",
                                (changed, row[0]),
                            )
                        except sqlite3.IntegrityError:
                            refused += 1  # a duplicate seq, event id or (stream, version)
                            continue
                        after = rows(log)
                        if after == before:
                            continue  # the same value (e.g. 1.0 and 1.00)
                        changes += 1
                        with pytest.raises(TamperedLogError) as caught:
                            await store.verify()
                        moved_below_one = column == "seq" and changed < 1
                        expected = changed if moved_below_one else first_difference(before, after)
                        assert caught.value.sequence == expected, (
                            column,
                            row[0],
                            changed,
                        )
                        new_seq = changed if column == "seq" else row[0]
                        db.execute(
                            f"UPDATE events SET {column} = ? WHERE seq = ?", (value, new_seq)
                        )
        assert rows(log) == before
        assert (await store.verify()).events == EVENTS
    assert changes > 1000
    figures.add("6 tampering", single_byte_changes=changes, refused_by_constraints=refused)


def _delete(db: sqlite3.Connection, k: int) -> None:
    db.execute("DELETE FROM events WHERE seq = ?", (k,))


def _insert(db: sqlite3.Connection, k: int) -> None:
    db.execute("UPDATE events SET seq = seq + 100 WHERE seq >= ?", (k,))
    db.execute("UPDATE events SET seq = seq - 99 WHERE seq >= 100")
    db.execute(
        "INSERT INTO events SELECT ?, 'forged-' || event_id, stream_id, version + 50, type, "
        "schema_version, recorded_at, actor, reason, correlation_id, data, hash "
        "FROM events WHERE seq = ?",
        (k, k + 1),
    )


def _swap(db: sqlite3.Connection, k: int) -> None:
    db.execute("UPDATE events SET seq = -1 WHERE seq = ?", (k,))
    db.execute("UPDATE events SET seq = ? WHERE seq = ?", (k, k + 1))
    db.execute("UPDATE events SET seq = ? WHERE seq = -1", (k + 1,))


def _resequence(db: sqlite3.Connection, k: int) -> None:
    db.execute("DELETE FROM events WHERE seq = ?", (k,))
    db.execute("UPDATE events SET seq = seq + 100 WHERE seq > ?", (k,))
    db.execute("UPDATE events SET seq = seq - 101 WHERE seq >= 100")


STRUCTURAL: dict[str, Callable[[sqlite3.Connection, int], None]] = {
    "delete": _delete,
    "insert": _insert,
    "swap": _swap,
    "resequence": _resequence,
}


@pytest.mark.parametrize("edit", [pytest.param(name, id=name) for name in STRUCTURAL])
async def test_deletion_insertion_swap_and_resequencing_are_named(
    log: Path, edit: str, figures: Figures
) -> None:
    """Deleting, inserting, swapping or renumbering events at any position names the first."""
    drop_triggers(log)
    before = rows(log)
    last = EVENTS - 1  # every position that has a next event
    for k in range(1, last + 1):
        with connect(log) as db:
            db.execute("BEGIN")
            STRUCTURAL[edit](db, k)
            db.execute("COMMIT")
        after = rows(log)
        assert after != before
        error = await verify_error(log)
        assert error.sequence == first_difference(before, after) == k
        with connect(log) as db:
            db.execute("BEGIN")
            db.execute("DELETE FROM events")
            db.executemany(f"INSERT INTO events VALUES ({','.join('?' * 12)})", before)
            db.execute("COMMIT")
    figures.add("6 tampering", structural_edits=last)


def matches_checkpoint(report: VerifyReport, head: tuple[int, str], hashes: dict[int, str]) -> bool:
    """Whether a verified log still holds the exported checkpoint (sequence, hash)."""
    sequence, digest = head
    return report.head_sequence >= sequence and hashes.get(sequence) == digest


@pytest.mark.parametrize("cut", [pytest.param(k, id=f"last{k}") for k in range(1, EVENTS + 1)])
@pytest.mark.parametrize("refill", [pytest.param(False, id="cut"), pytest.param(True, id="refill")])
async def test_truncated_tail_is_caught_by_the_exported_checkpoint(
    log: Path, cut: int, refill: bool, figures: Figures
) -> None:
    """Cutting the last events, even refilled with new ones, fails the exported checkpoint."""
    async with SQLiteEventStore(log) as store:
        report = await store.verify()
        checkpoint = (report.head_sequence, report.head_hash)  # kept outside the database
        hashes = {e.sequence: e.hash for e in await store.read_all()}
        assert matches_checkpoint(report, checkpoint, hashes)
    drop_triggers(log)
    with connect(log) as db:
        db.execute("DELETE FROM events WHERE seq > ?", (EVENTS - cut,))
    async with SQLiteEventStore(log) as store:
        if refill:  # new events put where the cut ones were: a valid chain again
            for n in range(cut):
                await store.append(f"new{n}", [NewEvent(TaskCreated(agent="x"))])
        report = await store.verify()
        hashes = {e.sequence: e.hash for e in await store.read_all()}
    assert report.head_sequence == EVENTS - cut + (cut if refill else 0)
    assert not matches_checkpoint(report, checkpoint, hashes)
    figures.add("6 tampering", truncations=1)


@pytest.mark.parametrize("moved_to", [pytest.param(n, id=f"seq{n}") for n in (0, -1, -(2**62))])
async def test_event_renumbered_below_one_is_named(log: Path, moved_to: int) -> None:
    """An event moved to a sequence number below 1 (where no scan looks) is named."""
    drop_triggers(log)
    with connect(log) as db:
        db.execute("UPDATE events SET seq = ? WHERE seq = ?", (moved_to, EVENTS))
    error = await verify_error(log)
    assert error.sequence == moved_to
    assert not check(log).ok
