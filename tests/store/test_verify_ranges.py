"""A long log is verified in ranges on several cores, with the verdict of a single pass."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tasktrail import (
    NewEvent,
    SQLiteEventStore,
    TamperedLogError,
    TaskClaimed,
    TaskCreated,
    TaskStarted,
)
from tasktrail.store import _sqlite_scan
from tasktrail.store._verify_range import check_range

TASKS = 7  # 21 events: ranges of 6, 6, 6 and 3 on four cores


@pytest.fixture
async def log(db_path: Path) -> Path:
    """A closed database of seven tasks, three events each."""
    async with SQLiteEventStore(db_path) as store:
        for index in range(TASKS):
            events = [TaskCreated(agent="x"), TaskClaimed(worker_id="w", attempt=1), TaskStarted()]
            await store.append(f"t{index}", [NewEvent(e) for e in events], expected_version=0)
    return db_path


@pytest.fixture
def in_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify every log in ranges, on four cores, however short it is."""
    monkeypatch.setattr(_sqlite_scan, "PARALLEL_MIN_EVENTS", 1)
    monkeypatch.setattr(_sqlite_scan.os, "cpu_count", lambda: 4)


def tamper(path: Path, statement: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TRIGGER events_append_only_update")
        db.execute("DROP TRIGGER events_append_only_delete")
        db.execute(statement)
    finally:
        db.close()


async def verify(path: Path) -> object:
    async with SQLiteEventStore(path) as store:
        return await store.verify()


async def test_ranges_report_what_one_pass_reports(log: Path, in_ranges: None) -> None:
    """The report (events, head, head hash) equals the single pass's."""
    ranged = await verify(log)
    _sqlite_scan.PARALLEL_MIN_EVENTS = 10**12
    assert ranged == await verify(log)


@pytest.mark.parametrize(
    ("statement", "sequence"),
    [
        pytest.param("UPDATE events SET data = '{}' WHERE seq = 17", 17, id="changed-late"),
        pytest.param("UPDATE events SET actor = 'x' WHERE seq = 2", 2, id="changed-early"),
        pytest.param("DELETE FROM events WHERE seq = 12", 12, id="missing-at-range-end"),
        pytest.param("DELETE FROM events WHERE seq = 13", 13, id="missing-at-range-start"),
        pytest.param(
            "UPDATE events SET hash = '0' WHERE seq IN (9, 20)", 9, id="first-of-two-wins"
        ),
    ],
)
async def test_ranges_name_the_first_bad_event(
    log: Path, in_ranges: None, statement: str, sequence: int
) -> None:
    """A change anywhere is reported at the sequence number a single pass names."""
    tamper(log, statement)
    with pytest.raises(TamperedLogError) as caught:
        await verify(log)
    assert caught.value.sequence == sequence


def test_check_range_counts_the_good_events(log: Path) -> None:
    """One range checks its events against the stored hash before it."""
    result = check_range(str(log), 4, 9)
    assert (result.good, result.bad) == (6, None)
