"""Scenario 5: a full disk, a read-only file, random bit flips and targeted damage.

Every case ends in a typed :class:`~tasktrail.TasktrailError` (under a generous hang
guard), loses nothing acknowledged, and never returns changed content without one of
tasktrail's checks (``verify``, ``check_projection``, a typed read error) saying so.

Sizes: ``TASKTRAIL_BIT_FLIPS`` (CI 1000, soak 20000).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from checker import check
from scenario import Figures, assert_clean, size, writer_pragma

from tasktrail import (
    CorruptDatabaseError,
    NewEvent,
    OutputAppended,
    SQLiteEventStore,
    StorageFullError,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    TasktrailError,
)

BIT_FLIPS = int(size("TASKTRAIL_BIT_FLIPS", 1000, 20000))
GUARD = 5.0  # seconds: a hang guard around each trial, not a timing claim


async def build(path: Path, tasks: int = 12) -> list[tuple[str, int]]:
    """A database of ``tasks`` tasks in several states; returns the acknowledged versions."""
    acknowledged = []
    async with SQLiteEventStore(path) as store:
        for n in range(tasks):
            steps: list[Any] = [TaskCreated(agent="a", prompt=f"prompt {n}")]
            if n % 3:
                steps += [TaskClaimed(worker_id="w", attempt=1), TaskStarted()]
                steps += [OutputAppended(text=f"output {n}\n")]
            if n % 3 == 2:
                steps.append(TaskCompleted(result={"n": n}))
            for version, payload in enumerate(steps):
                done = await store.append(f"t{n}", [NewEvent(payload)], expected_version=version)
                acknowledged.append((f"t{n}", done.version))
    return acknowledged


async def content(path: Path) -> tuple[list[Any], list[Any]]:
    """Every event and every task, as tasktrail reads them."""
    async with SQLiteEventStore(path) as store:
        return await store.read_all(limit=10_000), await store.list_tasks()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Any, Any]:
    """A closed database's bytes, its content and its acknowledged versions."""
    path = tmp_path_factory.mktemp("pristine") / "tasks.db"
    acknowledged = asyncio.run(build(path))
    assert not Path(f"{path}-wal").exists()  # closed: everything is in the main file
    return path.read_bytes(), asyncio.run(content(path)), acknowledged


async def inspect(path: Path) -> tuple[bool, Any]:
    """Open and read everything; (detected, content). Any error but a TasktrailError fails."""
    detected = False
    events: Any = None
    tasks: Any = None
    try:
        async with asyncio.timeout(GUARD), SQLiteEventStore(path) as store:
            for step in ("verify", "events", "tasks", "projection"):
                try:
                    if step == "verify":
                        await store.verify()
                    elif step == "events":
                        events = await store.read_all(limit=10_000)
                    elif step == "tasks":
                        tasks = await store.list_tasks()
                    elif await store.check_projection():
                        detected = True
                except TasktrailError:
                    detected = True
    except TasktrailError:
        detected = True
    return detected, (events, tasks)


def test_random_bit_flips_are_typed_and_never_silent(
    tmp_path: Path, pristine: tuple[bytes, Any, Any], figures: Figures
) -> None:
    """Each random bit flip gives a typed error or unchanged content, never silent change."""
    original, expected, _ = pristine
    rng = random.Random(6)
    path = tmp_path / "flipped.db"
    detected = unchanged = undetected = 0
    for _ in range(BIT_FLIPS):
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        damaged = bytearray(original)
        offset = rng.randrange(len(damaged))
        damaged[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        caught, seen = asyncio.run(inspect(path))
        if caught:
            detected += 1
        elif seen == expected:
            unchanged += 1
        else:
            undetected += 1
    assert undetected == 0
    assert detected > 0
    figures.add(
        "5 damage",
        bit_flips=BIT_FLIPS,
        flips_detected=detected,
        flips_harmless=unchanged,
        flips_undetected=undetected,
    )


def _header(data: bytes) -> bytes:
    return b"\x00" * 100 + data[100:]


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return b"not a database, just some text\n" * 100


def _schema(data: bytes) -> bytes:
    """A space in the stored ``CREATE TABLE events`` made 0xA0, as one bit flip did: SQLite
    then reads the first column as a column of another name and type, and the rest shifted."""
    at = data.index(b"seq            INTEGER PRIMARY KEY") + len(b"seq ")
    return data[:at] + b"\xa0" + data[at + 1 :]


DAMAGE = {
    "header": _header,
    "truncated": _half,
    "not-a-database": _garbage,
    "schema": _schema,
}


@pytest.mark.parametrize("damage", [pytest.param(name, id=name) for name in DAMAGE])
def test_targeted_damage_is_a_typed_error(
    tmp_path: Path, pristine: tuple[bytes, Any, Any], damage: str, figures: Figures
) -> None:
    """A zeroed header, a cut file, a file of text or a damaged table definition is reported
    as a typed error."""
    original, _, _ = pristine
    path = tmp_path / "damaged.db"
    path.write_bytes(DAMAGE[damage](original))
    detected, _ = asyncio.run(inspect(path))
    assert detected
    with pytest.raises(CorruptDatabaseError):
        asyncio.run(content(path))
    figures.add("5 damage", targeted=1)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("schema_version", "", id="schema_version-text"),
        pytest.param("version", 2.5, id="version-real"),
        pytest.param("actor", b"user", id="actor-blob"),  # TEXT affinity keeps a blob
        pytest.param("recorded_at", "noon", id="recorded_at-text"),
    ],
)
def test_a_value_of_the_wrong_type_in_an_event_row_is_a_typed_error(
    tmp_path: Path, pristine: tuple[bytes, Any, Any], column: str, value: object
) -> None:
    """A damaged record can hold any type in any column (one soak bit flip made a schema
    version the empty string): reading it raises CorruptDatabaseError, never a TypeError
    or a wrong value."""
    original, _, _ = pristine
    path = tmp_path / "retyped.db"
    path.write_bytes(original)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TRIGGER events_append_only_update")  # what a damaged page does, by hand
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = 3", (value,))
    detected, _ = asyncio.run(inspect(path))
    assert detected
    with pytest.raises(CorruptDatabaseError, match=f"column {column} holds"):
        asyncio.run(content(path))


def test_zero_length_file_fails_the_exported_checkpoint(
    tmp_path: Path, pristine: tuple[bytes, Any, Any]
) -> None:
    """An emptied file opens as a new database; the exported checkpoint shows the loss."""
    _, (events, _), _ = pristine
    checkpoint = (events[-1].sequence, events[-1].hash)
    path = tmp_path / "emptied.db"
    path.write_bytes(b"")

    async def head() -> tuple[int, str]:
        async with SQLiteEventStore(path) as store:
            report = await store.verify()
            return report.head_sequence, report.head_hash

    assert asyncio.run(head()) == (0, "0" * 64) != checkpoint


def test_garbage_wal_is_ignored_and_nothing_is_lost(
    tmp_path: Path, pristine: tuple[bytes, Any, Any], figures: Figures
) -> None:
    """A -wal file of garbage beside an intact database is ignored: all content is there."""
    original, expected, acknowledged = pristine
    path = tmp_path / "tasks.db"
    path.write_bytes(original)
    Path(f"{path}-wal").write_bytes(random.Random(5).randbytes(64 * 1024))
    assert asyncio.run(inspect(path)) == (False, expected)
    assert_clean(path, acknowledged=acknowledged)
    figures.add("5 damage", targeted=1)


async def test_full_disk_loses_nothing_and_writes_resume(db_path: Path, figures: Figures) -> None:
    """Appends until the size cap fail typed; acknowledged events stay; space cures it."""
    acknowledged = []
    failures = 0
    async with SQLiteEventStore(db_path) as store:
        pages = await writer_pragma(store, "page_count")  # the store's own writing connection
        await writer_pragma(store, f"max_page_count = {pages + 8}")
        for n in range(200):
            try:
                done = await store.append(
                    f"t{n}", [NewEvent(TaskCreated(agent="a", prompt="x" * 2000))]
                )
                acknowledged.append((f"t{n}", done.version))
            except StorageFullError:
                failures += 1
        assert failures > 0
        assert acknowledged
        await writer_pragma(store, "max_page_count = 1073741823")
        done = await store.append("after", [NewEvent(TaskCreated(agent="a"))])
        acknowledged.append(("after", done.version))
    assert_clean(db_path, acknowledged=acknowledged)
    figures.add("5 damage", disk_full_refusals=failures, disk_full_acknowledged=len(acknowledged))


async def try_to_write(path: Path) -> str:
    """Open ``path`` and append; the name of the TasktrailError raised, or ``written``."""
    try:
        async with SQLiteEventStore(path) as store:
            await store.append("new", [NewEvent(TaskCreated(agent="a"))])
    except TasktrailError as err:
        return type(err).__name__
    return "written"


def as_nobody(path: Path) -> str:
    """``try_to_write(path)`` in a forked child running as the unprivileged user nobody."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try, report through the pipe
        code = 1
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write, asyncio.run(try_to_write(path)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become the user nobody")
def test_read_only_file_for_an_unprivileged_user_is_a_typed_error(
    pristine: tuple[bytes, Any, Any], figures: Figures
) -> None:
    """A user who may not write the file or its directory gets a typed StorageError."""
    original, _, acknowledged = pristine
    directory = Path(tempfile.mkdtemp(prefix="tasktrail-ro-"))
    try:
        directory.chmod(0o755)
        path = directory / "tasks.db"
        path.write_bytes(original)
        path.chmod(0o644)
        kind = as_nobody(path)
        assert kind in {"ReadOnlyStorageError", "StorageError"}, kind
        assert path.read_bytes() == original
        assert_clean(path, acknowledged=acknowledged)
    finally:
        shutil.rmtree(directory)
    figures.add("5 damage", read_only_refusals=1)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE tasks SET record = CAST(x'7bff7d' AS TEXT)", id="projection-row"),
        pytest.param("UPDATE tasks SET agent = CAST(x'61ff' AS TEXT)", id="projection-column"),
        pytest.param(
            "INSERT INTO events SELECT seq + 100, event_id || 'x', stream_id, version + 100, "
            "type, schema_version, recorded_at, CAST(x'ff' AS TEXT), reason, correlation_id, "
            "data, hash FROM events WHERE seq = 1",
            id="event-column",
        ),
    ],
)
async def test_invalid_utf8_in_a_row_is_a_typed_error(db_path: Path, statement: str) -> None:
    """Text that is not UTF-8 (a damaged row) is a CorruptDatabaseError, not UnicodeDecodeError."""
    await build(db_path, tasks=2)
    with sqlite3.connect(db_path) as raw:
        raw.execute(statement)
    raw.close()
    async with SQLiteEventStore(db_path) as store:
        outcomes = []
        for read in (store.list_tasks, store.read_all, store.check_projection):
            try:
                await read()
                outcomes.append("ok")
            except CorruptDatabaseError:
                outcomes.append("corrupt")
        assert "corrupt" in outcomes


def test_checker_reads_read_only(pristine: tuple[bytes, Any, Any], tmp_path: Path) -> None:
    """The checker opens the database with ?mode=ro and leaves the file byte for byte."""
    original, _, acknowledged = pristine
    path = tmp_path / "tasks.db"
    path.write_bytes(original)
    report = check(path, acknowledged=acknowledged)
    assert report.ok
    assert path.read_bytes() == original


async def test_a_failed_read_leaves_no_stale_snapshot(db_path: Path) -> None:
    """After a read fails on a damaged row, later reads still see every new commit."""
    await build(db_path, tasks=1)
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE tasks SET record = CAST(x'7bff7d' AS TEXT)")
    raw.close()
    async with SQLiteEventStore(db_path) as store:
        with pytest.raises(CorruptDatabaseError):
            await store.list_tasks(agent="a")
        for n in range(3):
            done = await store.append(f"new{n}", [NewEvent(TaskCreated(agent="b"))])
            assert await store.head() == done.sequence  # the reader is not stuck in the past
            assert [t.id for t in await store.list_tasks(agent="b")] == [
                f"new{k}" for k in range(n + 1)
            ]
