"""Several OS processes share one SQLite file: nothing lost, nothing locked, one chain."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from scenario import assert_clean

from tasktrail import RecordedEvent, SQLiteEventStore, TaskState

# A worker process: waits for the go file, then runs COUNT tasks through four events each,
# WIDTH tasks at a time, and prints each task id once its last append has returned; then
# the time span of its appends.
WORKER = r"""
import asyncio, os, sys, time
from tasktrail import NewEvent, SQLiteEventStore, TaskClaimed, TaskCompleted, TaskCreated
from tasktrail import TaskStarted

path, name, count, width, go = sys.argv[1:]
count, width = int(count), int(width)

async def lifecycle(store, task_id, slots):
    steps = [
        TaskCreated(agent=name),
        TaskClaimed(worker_id=name, attempt=1),
        TaskStarted(session_id=task_id),
        TaskCompleted(result=task_id),
    ]
    async with slots:
        for version, payload in enumerate(steps):
            await store.append(task_id, [NewEvent(payload, actor=name)], expected_version=version)
    print(task_id, flush=True)

async def main():
    print("ready", flush=True)
    while not os.path.exists(go):
        await asyncio.sleep(0.001)
    slots = asyncio.Semaphore(width)
    async with SQLiteEventStore(path) as store:
        began = time.time()
        await asyncio.gather(*(lifecycle(store, f"{name}-{i}", slots) for i in range(count)))
        print("span", began, time.time(), flush=True)

asyncio.run(main())
"""

TYPES = ["task.created", "task.claimed", "task.started", "task.completed"]
TIMEOUT = 120.0
WIDTH = 16  # tasks in flight per process: enough to batch, few enough to interleave


def run_together(script: str, args: Sequence[Sequence[str]], go: Path) -> list[tuple[str, str]]:
    """Start one process per argument list, release them at once, return (stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", script, *argv, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for argv in args
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        go.touch()
        outputs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert err == "", err
    return outputs


def schema(path: Path) -> tuple[object, ...]:
    """The schema version, journal mode and every schema object of a database file."""
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("PRAGMA user_version").fetchone(),
            db.execute("PRAGMA journal_mode").fetchone(),
            db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
        )
    finally:
        db.close()


async def read_everything(store: SQLiteEventStore) -> list[RecordedEvent]:
    """The whole log, page by page."""
    events: list[RecordedEvent] = []
    while page := await store.read_all(after=len(events), limit=1000):
        events.extend(page)
    return events


async def test_three_processes_append_to_one_file(tmp_path: Path) -> None:
    """Three processes append concurrently; every acknowledged task is whole; one valid chain."""
    path, processes, count = tmp_path / "shared.db", 3, 300
    async with SQLiteEventStore(path):
        pass  # the schema exists before the race; the next test races on creating it
    argvs = [[str(path), f"p{n}", str(count), str(WIDTH)] for n in range(processes)]
    outputs = run_together(WORKER, argvs, tmp_path / "go")
    lines = [line.split() for out, _ in outputs for line in out.splitlines()]
    acknowledged = [line[0] for line in lines if line[0] != "span"]
    expected = {f"p{n}-{i}" for n in range(processes) for i in range(count)}
    assert len(acknowledged) == len(expected)
    assert set(acknowledged) == expected
    # The processes were appending at the same time: their spans overlap.
    spans = [(float(line[1]), float(line[2])) for line in lines if line[0] == "span"]
    assert len(spans) == processes
    assert max(began for began, _ in spans) < min(ended for _, ended in spans)

    async with SQLiteEventStore(path) as store:
        events = await read_everything(store)
        total = processes * count * len(TYPES)
        assert [e.sequence for e in events] == list(range(1, total + 1))
        streams: dict[str, list[RecordedEvent]] = {}
        for event in events:
            streams.setdefault(event.stream_id, []).append(event)
        assert streams.keys() == expected
        for task_id, stream in streams.items():
            assert [e.type for e in stream] == TYPES, task_id
            assert [e.version for e in stream] == [1, 2, 3, 4], task_id
        report = await store.verify()
        assert (report.events, report.head_sequence, report.append_only) == (total, total, True)
        assert await store.check_projection() == []
        done = await store.list_tasks(state=TaskState.COMPLETED)
        assert {t.id for t in done} == expected
        assert all(t.result == t.id for t in done)
    assert_clean(path, acknowledged=[(task_id, 4) for task_id in acknowledged])


# A process that opens (and so creates) the database, then appends one task.
OPENER = r"""
import asyncio, os, sys
from tasktrail import NewEvent, SQLiteEventStore, TaskCreated

path, name, go = sys.argv[1], sys.argv[2], sys.argv[3]

async def main():
    print("ready", flush=True)
    while not os.path.exists(go):
        await asyncio.sleep(0.0005)
    async with SQLiteEventStore(path) as store:
        await store.append(name, [NewEvent(TaskCreated(agent=name))], expected_version=0)
    print(name, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("attempt", [pytest.param(n, id=f"race{n}") for n in range(3)])
async def test_processes_create_a_new_file_at_once(tmp_path: Path, attempt: int) -> None:
    """Several processes opening a new file at the same moment all succeed; one schema."""
    path, processes = tmp_path / f"new-{attempt}.db", 4
    names = [f"opener{n}" for n in range(processes)]
    outputs = run_together(OPENER, [[str(path), name] for name in names], tmp_path / "go")
    assert sorted(out.split()[-1] for out, _ in outputs) == names

    reference = tmp_path / "reference.db"
    async with SQLiteEventStore(reference):
        pass
    assert schema(path) == schema(reference)
    async with SQLiteEventStore(path) as store:
        assert sorted(t.id for t in await store.list_tasks()) == names
        report = await store.verify()
        assert (report.events, report.append_only) == (processes, True)
        assert await store.check_projection() == []
    assert_clean(path, acknowledged=[(name, 1) for name in names])
