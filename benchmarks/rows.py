"""The raw side of every baseline: rows built as the store builds them, a log read back,
and rows written with stdlib ``sqlite3``.

* :class:`Chain` is the one row builder: it numbers, hashes and folds events with the
  library's own functions (``tasktrail.store._chain.event_hash``, ``projection.fold``,
  ``tasktrail.store._plan.task_row``), so a row it makes is byte for byte the row the
  store would write for the same event at the same place in the log. The store-level
  baseline, the recovery baseline and the large recovery logs (``history.py``) use it.
* :func:`read_log` is the one reader: every event row of a database as stored, and the
  ``tasks`` row after each event (the fold so far). The baselines of the runtime scenarios
  write exactly what a run wrote, copied from its log.
* :func:`raw_batched` and :func:`raw_single_commits` write rows with the store's own
  statements (``INSERT_EVENT``, ``UPSERT_TASK``) into the store's own schema, with its
  durability (WAL, ``synchronous=FULL``), the rows built before the clock starts: SQLite
  and the disk alone, the ceiling tasktrail is measured against.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from common import RAW_BATCH, timed
from tasktrail import RecordedEvent, Task, fold
from tasktrail.events import EVENT_TAGS, Event, decode_payload, encode_payload, new_event_id
from tasktrail.store._chain import GENESIS, EventHeader, event_hash
from tasktrail.store._migrate import migrations
from tasktrail.store._plan import EventRow, TaskRow, task_row
from tasktrail.store._sqlite_commit import INSERT_EVENT, UPSERT_TASK

__all__ = [
    "INSERT_EVENT",
    "SELECT_EVENTS",
    "UPSERT_TASK",
    "Chain",
    "Log",
    "create_schema",
    "event_rows",
    "raw_batched",
    "raw_connect",
    "raw_single_commits",
    "read_log",
]

SELECT_EVENTS: Final = (
    "SELECT seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, "
    "reason, correlation_id, data, hash FROM events ORDER BY seq"
)
"""Every event row, in log order, as the ``events`` table holds it."""


# -- building rows -----------------------------------------------------------------------------


class Chain:
    """Builds the rows of a log, event after event, as the store's commit plan does.

    Start it at the log's tail (``sequence``, ``previous`` hash) and give it the tasks as
    they are there (``tasks``, updated in place); :meth:`add` returns the event row and
    the task as the event left it.
    """

    __slots__ = ("previous", "sequence", "tasks")

    def __init__(
        self, *, sequence: int = 0, previous: str = GENESIS, tasks: dict[str, Task] | None = None
    ) -> None:
        self.sequence = sequence
        self.previous = previous
        self.tasks: dict[str, Task] = {} if tasks is None else tasks

    def add(
        self,
        stream: str,
        payload: Event,
        *,
        actor: str,
        timestamp: float,
        data: bytes | None = None,
        tag: str | None = None,
        event_id: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> tuple[EventRow, Task]:
        """The row of ``payload`` appended to ``stream`` (``data`` and ``tag``: its encoded
        payload and type, when the caller has them already)."""
        task = self.tasks.get(stream)
        self.sequence += 1
        header: EventHeader = (
            self.sequence, event_id or new_event_id(), stream,
            1 if task is None else task.version + 1, tag or EVENT_TAGS[type(payload)],
            payload.schema_version, timestamp, actor, reason, correlation_id,
        )  # fmt: skip
        data = encode_payload(payload) if data is None else data
        self.previous = event_hash(self.previous, header, data)
        task = self.tasks[stream] = fold(task, RecordedEvent(*header, payload, self.previous))
        return (*header, data.decode(), self.previous), task

    def rows(
        self, events: Iterable[tuple[str, Event, str]], *, timestamp: float | None = None
    ) -> tuple[list[EventRow], list[TaskRow]]:
        """The rows of ``(stream, payload, actor)`` events in order: one event row and the
        ``tasks`` row after it for each."""
        now = time.time() if timestamp is None else timestamp
        event_rows: list[EventRow] = []
        task_rows: list[TaskRow] = []
        for stream, payload, actor in events:
            row, task = self.add(stream, payload, actor=actor, timestamp=now)
            event_rows.append(row)
            task_rows.append(task_row(task, row[0]))
        return event_rows, task_rows


# -- reading a log back --------------------------------------------------------------------------


def event_rows(db: sqlite3.Connection) -> Iterator[EventRow]:
    """Every event row of ``db``, in log order, as stored."""
    rows: Iterable[EventRow] = db.execute(SELECT_EVENTS)
    yield from rows


def recorded(row: EventRow) -> RecordedEvent:
    """The event a row holds, decoded."""
    payload = decode_payload(row[4], row[5], row[10], sequence=row[0])
    return RecordedEvent(*row[:10], payload, row[11])


@dataclass(slots=True)
class Log:
    """What a run left in its database: the event rows and one task row per event."""

    events: list[EventRow]
    upserts: list[TaskRow]
    tasks: int
    types: dict[str, int]

    @property
    def events_per_task(self) -> float:
        return len(self.events) / self.tasks

    @property
    def commits(self) -> int:
        """How many commits wrote these events (a commit stamps all its events with one
        time)."""
        return len({row[6] for row in self.events})

    def after(self, sequence: int) -> Log:
        """The part of the log written after ``sequence``."""
        index = next((i for i, row in enumerate(self.events) if row[0] > sequence), None)
        if index is None:
            return Log([], [], 0, {})
        events = self.events[index:]
        return Log(
            events,
            self.upserts[index:],
            len({row[2] for row in events}),
            dict(Counter(row[4] for row in events)),
        )

    def upto(self, sequence: int) -> Log:
        """The part of the log up to ``sequence``, with only each task's last row."""
        events = [row for row in self.events if row[0] <= sequence]
        last: dict[str, TaskRow] = {}
        for upsert in self.upserts[: len(events)]:
            last[upsert[0]] = upsert
        return Log(events, list(last.values()), len(last), dict(Counter(r[4] for r in events)))


def read_log(path: Path) -> Log:
    """Every event row of ``path`` as stored, and the ``tasks`` row after each event."""
    db = sqlite3.connect(path)
    try:
        rows = list(event_rows(db))
    finally:
        db.close()
    state: dict[str, Task] = {}
    upserts: list[TaskRow] = []
    for row in rows:
        task = state[row[2]] = fold(state.get(row[2]), recorded(row))
        upserts.append(task_row(task, row[0]))
    return Log(rows, upserts, len(state), dict(Counter(row[4] for row in rows)))


# -- writing rows raw ----------------------------------------------------------------------------


def raw_connect(path: Path) -> sqlite3.Connection:
    """A stdlib connection with tasktrail's durability: WAL, ``synchronous=FULL``."""
    db = sqlite3.connect(path, isolation_level=None)
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"could not switch {path} to WAL (got {mode!r})")
    db.execute("PRAGMA synchronous = FULL")
    return db


def create_schema(db: sqlite3.Connection) -> None:
    """tasktrail's schema (every migration, ``user_version`` set), in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    for number, _name, statements in migrations():
        for statement in statements:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("COMMIT")


def raw_batched(
    path: Path,
    events: Sequence[EventRow],
    upserts: Sequence[TaskRow],
    *,
    batch: int = RAW_BATCH,
    preload: Log | None = None,
) -> tuple[float, int]:
    """``(seconds, events in the log)`` to write ``events`` and ``upserts`` (one per
    event) on a new file, ``batch`` events and their upserts per transaction. ``preload``
    is written first, untimed (what the database held before the measured run)."""
    db = raw_connect(path)
    try:
        create_schema(db)
        if preload is not None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT_EVENT, preload.events)
            db.executemany(UPSERT_TASK, preload.upserts)
            db.execute("COMMIT")

        def write() -> int:
            for start in range(0, len(events), batch):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(INSERT_EVENT, events[start : start + batch])
                db.executemany(UPSERT_TASK, upserts[start : start + batch])
                db.execute("COMMIT")
            return len(events)

        elapsed, _ = timed(write)
        return elapsed, db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()


def raw_single_commits(path: Path, log: Log) -> list[float]:
    """Seconds of each commit writing one event row of ``log`` and its upsert."""
    db = raw_connect(path)
    try:
        create_schema(db)
        gc.collect()
        latencies = []
        for event, upsert in zip(log.events, log.upserts, strict=True):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute(INSERT_EVENT, event)
            db.execute(UPSERT_TASK, upsert)
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        db.close()
