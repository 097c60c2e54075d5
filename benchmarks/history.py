"""Large event logs for the recovery and memory scenarios, built fast and cached.

A log of H events is mostly finished tasks (``TaskCreated``, ``TaskClaimed``,
``TaskStarted``, ``TaskCompleted``) followed by ``live`` tasks that a dead worker left
``running``. The finished tasks are written with stdlib ``sqlite3`` straight into the real
schema (tasktrail's own migrations) by the suite's one row builder, ``rows.Chain``, which
uses the library's own functions: payloads from ``tasktrail.events.encode_payload``, hashes
from ``tasktrail.store._chain.event_hash`` (one chain from the genesis), event ids from
``tasktrail.events.new_event_id``, task rows from ``tasktrail.store._plan.task_row`` of a
``fold``-ed task. The live tasks are appended
through ``SQLiteEventStore`` itself, and the finished file passes ``store.verify()``.

Speed: the rows are made in this thread while another thread inserts the previous chunk
(``sqlite3`` lets go of the GIL while SQLite works), with ``synchronous=OFF``, a 3 GB page
cache and large transactions: about 10M events in one to two minutes on the project's
machine. Built files are kept in a cache directory under a name that records what they
hold, so the recovery and memory scenarios (and a rerun given the same ``--cache``) share
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from common import AGENT
from rows import INSERT_EVENT, UPSERT_TASK, Chain, create_schema
from tasktrail import (
    NewEvent,
    OutputAppended,
    SQLiteEventStore,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
)
from tasktrail.events import EVENT_TAGS, Event, encode_payload
from tasktrail.runtime._recovery import pid_exists
from tasktrail.store._migrate import migrations
from tasktrail.store._plan import EventRow, TaskRow, task_row

DEAD_WORKER: Final = "dead-worker"
CHUNK_TASKS: Final = 25_000
"""Finished tasks per generated chunk (and per insert transaction)."""
FORMAT: Final = 2
"""Bumped whenever what a built file holds changes, so an old cache is not reused."""


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    for _ in range(10):
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        if not pid_exists(process.pid):
            return process.pid
    raise RuntimeError("could not find a free pid")


def finished_rows(
    tasks: int, start_time: float, outputs: int = 0
) -> Iterator[tuple[list[EventRow], list[TaskRow]]]:
    """``tasks`` finished tasks, hash-chained from the genesis: (event rows, task rows) in
    chunks of ``CHUNK_TASKS`` tasks. Every task is folded from its events: created,
    claimed, started, ``outputs`` lines of output, completed."""
    lines = [OutputAppended(text=f"step {n + 1} of {outputs}\n") for n in range(outputs)]
    fixed: list[tuple[Event, str, bytes]] = [
        (p, EVENT_TAGS[type(p)], encode_payload(p))
        for p in (
            TaskClaimed(worker_id="old-worker", attempt=1),
            TaskStarted(),
            *lines,
            TaskCompleted(result=None),
        )
    ]
    chain = Chain()
    for first in range(0, tasks, CHUNK_TASKS):
        events: list[EventRow] = []
        rows: list[TaskRow] = []
        for index in range(first, min(first + CHUNK_TASKS, tasks)):
            stream = f"done-{index:08d}"
            created = TaskCreated(agent=AGENT, prompt=f"summarise report {index}")
            for payload, tag, data in [(created, "task.created", encode_payload(created)), *fixed]:
                row, task = chain.add(
                    stream, payload, actor="old-worker", data=data, tag=tag,
                    timestamp=start_time + (chain.sequence + 1) * 1e-5,
                )  # fmt: skip
                events.append(row)
            rows.append(task_row(task, row[0]))
            del chain.tasks[stream]  # finished: no later event needs it
        yield events, rows


def _write_finished(path: Path, tasks: int, outputs: int = 0) -> None:
    """Write ``tasks`` finished tasks (``outputs`` output events each) into the empty
    schema at ``path``."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode = OFF")  # back to WAL below, before anyone else opens it
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -3000000")
        create_schema(db)
        chunks: queue.Queue[tuple[list[EventRow], list[TaskRow]] | None] = queue.Queue(maxsize=2)
        failure: list[BaseException] = []

        def insert() -> None:
            try:
                while (chunk := chunks.get()) is not None:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(INSERT_EVENT, chunk[0])
                    db.executemany(UPSERT_TASK, chunk[1])
                    db.execute("COMMIT")
            except BaseException as error:  # handed to the main thread below
                failure.append(error)
                while chunks.get() is not None:  # let the producer finish
                    pass

        writer = threading.Thread(target=insert, name="history-writer")
        writer.start()
        try:
            for chunk in finished_rows(tasks, time.time() - 86_400, outputs):
                if failure:
                    break
                chunks.put(chunk)
        finally:
            chunks.put(None)
            writer.join()
        if failure:
            raise failure[0]
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not switch {path} back to WAL (got {mode!r})")
    finally:
        db.close()


async def _add_live(path: Path, live: int, pid: int) -> int:
    """Append ``live`` tasks of a dead worker through the store; return the events in the
    log, after verifying the whole chain."""
    async with SQLiteEventStore(path, synchronous="OFF") as store:
        if live:
            await store.register_worker(DEAD_WORKER, host=socket.gethostname(), pid=pid)
        batch = [
            TaskCreated(agent=AGENT, prompt="a task its worker never finished", max_attempts=3),
            TaskClaimed(worker_id=DEAD_WORKER, attempt=1),
            TaskStarted(),
        ]
        for first in range(0, live, 1000):
            await asyncio.gather(
                *(
                    store.append(
                        f"live-{index:08d}",
                        [NewEvent(p, actor=DEAD_WORKER) for p in batch],
                        expected_version=0,
                    )
                    for index in range(first, min(first + 1000, live))
                )
            )
        report = await store.verify()
        running = await store.list_tasks(state="running", limit=live + 1)
        if len(running) != live:
            raise RuntimeError(f"expected {live} running tasks, found {len(running)}")
        return report.events


def _checkpoint(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def build(path: Path, *, finished: int, live: int, outputs: int = 0) -> int:
    """Build a log of ``finished`` finished tasks (each with ``outputs`` output events)
    then ``live`` running ones at ``path``; return its number of events."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    _write_finished(path, finished, outputs)
    events = asyncio.run(_add_live(path, live, dead_pid()))
    _checkpoint(path)
    return events


def _schema_digest() -> str:
    text = "\n".join(s for _n, _name, statements in migrations() for s in statements)
    return hashlib.sha256(f"{FORMAT}\n{text}".encode()).hexdigest()[:10]


def cached(cache: Path, *, history: int, live: int, outputs: int = 0) -> tuple[Path, int, float]:
    """A log of about ``history`` events whose last ``live`` tasks are running under a
    dead worker, from ``cache`` or built there: (path, events, seconds spent building, 0
    when it came from the cache). The rest of the history is finished tasks, each with
    ``outputs`` output events (``4 + outputs`` events a task)."""
    finished = max(0, history - 3 * live) // (4 + outputs)
    lines = f"-{outputs}o" if outputs else ""
    name = f"history-{finished}f{lines}-{live}l-{_schema_digest()}.db"
    path = cache / name
    done = Path(f"{path}.events")
    if path.exists() and done.exists():
        return path, int(done.read_text()), 0.0
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    events = build(path, finished=finished, live=live, outputs=outputs)
    done.write_text(f"{events}\n")
    return path, events, time.perf_counter() - start


_GUARD: Final = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN")
db.execute("SELECT count(*) FROM events WHERE seq = 1").fetchone()
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def scratch(template: Path, *, events: int, live: int) -> Iterator[Path]:
    """Let one measurement write to ``template`` itself, then throw its writes away.

    A helper process holds a read transaction on the file, begun while its WAL is empty,
    so no checkpoint can copy anything into the database file and no closing connection
    can fold the WAL back in (it is not the last). Afterwards the helper is killed and the
    WAL deleted: the file is as built, which is checked (``events`` events, ``live``
    running tasks). This replaces copying a 4.5 GB file twice per repetition.
    """
    for suffix in ("-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            _checkpoint(template)
            break
    guard = subprocess.Popen(
        [sys.executable, "-c", _GUARD, str(template)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert guard.stdout is not None
        if guard.stdout.readline().strip() != "ready":
            raise RuntimeError(f"could not hold a read transaction on {template}")
        yield template
    finally:
        guard.kill()
        guard.wait()
        for suffix in ("-wal", "-shm"):
            Path(f"{template}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(template)
    try:
        head = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        running = db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone()[0]
    finally:
        db.close()
    if (head, running) != (events, live):
        raise RuntimeError(
            f"{template} changed under a measurement: {head} events and {running} running "
            f"tasks, expected {events} and {live}; delete it so it is built again"
        )
