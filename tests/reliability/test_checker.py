"""The checker itself: it agrees with the lifecycle, and it sees each kind of breakage."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from checker import GENESIS, LEGAL, TRIGGER_OF, chain_hash, check

from helpers import PATH_TO, new
from tasktrail import SQLiteEventStore, TaskState
from tasktrail.events import EVENT_TYPES
from tasktrail.lifecycle import transition_table


def test_its_transition_table_is_the_lifecycle() -> None:
    """The checker's own table of legal transitions equals tasktrail's."""
    library = {
        (None if state is None else state.value, flag, trigger.value): dest.value
        for (state, flag, trigger), dest in transition_table().items()
    }
    assert library == LEGAL
    assert {tag: cls.trigger.value for tag, cls in EVENT_TYPES.items()} == TRIGGER_OF


@pytest.fixture
async def log(db_path: Path) -> Path:
    """A closed database: a completed task 'a' (4 events) and a pending task 'b'."""
    async with SQLiteEventStore(db_path) as store:
        await store.append("a", [new(t) for t in PATH_TO[TaskState.COMPLETED]])
        await store.append("b", [new(t) for t in PATH_TO[TaskState.PENDING]])
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TRIGGER events_append_only_update")
        db.execute("DROP TRIGGER events_append_only_delete")
    db.close()
    return db_path


def rows(path: Path) -> list[list[Any]]:
    """Every event row, in order."""
    with sqlite3.connect(path) as db:
        found = [list(row) for row in db.execute("SELECT * FROM events ORDER BY seq")]
    db.close()
    return found


def rewrite(path: Path, events: list[list[Any]]) -> None:
    """Replace the log with ``events``, re-hashed so that the chain itself is valid."""
    previous = GENESIS
    for row in events:
        row[11] = chain_hash(previous, [*row[:10], str(row[10]).encode()])
        previous = row[11]
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events")
        db.executemany(f"INSERT INTO events VALUES ({','.join('?' * 12)})", events)
    db.close()


def _drop_event(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE seq = 2")
    db.close()


def _illegal(path: Path) -> None:  # b: pending -> completed, chain re-hashed
    events = rows(path)
    extra = [*events[3]]
    extra[0], extra[1], extra[2], extra[3] = 6, "forged", "b", 2
    rewrite(path, [*events, extra])


def _after_terminal(path: Path) -> None:  # a: one more event after completed
    events = rows(path)
    extra = [*events[0]]
    extra[0], extra[1], extra[3] = 6, "forged", 5
    rewrite(path, [*events, extra])


def _version_gap(path: Path) -> None:
    events = rows(path)
    events[4][3] = 3  # b's creation claims version 3
    rewrite(path, events)


def _projection(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE tasks SET state = 'running' WHERE id = 'b'")
    db.close()


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "deleted-event": (_drop_event, "chain_breaks"),
    "illegal-transition": (_illegal, "illegal_transitions"),
    "event-after-terminal": (_after_terminal, "events_after_terminal"),
    "version-gap": (_version_gap, "version_gaps"),
    "projection-row": (_projection, "projection_mismatches"),
}


@pytest.mark.parametrize("breakage", [pytest.param(name, id=name) for name in BREAKAGES])
def test_each_breakage_is_counted(log: Path, breakage: str) -> None:
    """Each kind of breakage shows in its own count, and the report is not ok."""
    assert check(log).ok
    damage, field = BREAKAGES[breakage]
    damage(log)
    report = check(log)
    assert getattr(report, field) >= 1, report
    assert not report.ok


def test_acknowledged_and_batches(log: Path) -> None:
    """An acknowledged append not in the log, and half a batch in it, are counted."""
    ids = [row[1] for row in rows(log)]
    report = check(
        log,
        acknowledged=[("a", 4), ("b", 1), ("b", 2), ("ghost", 1)],
        batches=[ids[:4], [ids[4], "never-written"], ["also-never", "written"]],
    )
    assert (report.missing_acknowledged, report.partial_batches) == (2, 1)


def test_integrity_failure_is_counted(log: Path) -> None:
    """An index that disagrees with its table fails PRAGMA integrity_check, and is counted."""
    with sqlite3.connect(log) as db:
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "UPDATE sqlite_master SET sql = replace(sql, '(state, created_at)', '(agent)') "
            "WHERE name = 'tasks_by_state'"
        )
    db.close()
    assert check(log).integrity_failures >= 1


def test_crash_point_names_are_checked() -> None:
    """An unknown TASKTRAIL_CRASH_AT point stops the process at import, naming the points."""
    run = subprocess.run(
        [sys.executable, "-c", "import tasktrail._crashpoints"],
        env={"TASKTRAIL_CRASH_AT": "commit.nowhere:2", "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "unknown point" in run.stderr
    assert "commit.after_commit" in run.stderr
