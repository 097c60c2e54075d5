"""The store alone: durable append (scenario 1), the task lifecycle (2), rebuild (4) and
verify (6), each beside a raw ``sqlite3`` baseline in the same run.

append
    ``store.append()`` of 1, 10 or 100 events per call (each call one task: created,
    claimed, started, outputs, completed) from 1, 10 or 100 concurrent callers. Baseline:
    stdlib ``sqlite3`` writing the very rows the store wrote (read back from its log), one
    commit per round of callers (batch x callers events, one ``tasks`` upsert per append).

lifecycle
    N tasks each go through ``TaskCreated``, ``TaskClaimed``, ``TaskStarted``,
    ``TaskCompleted``, one ``append`` per event with ``expected_version``, from C
    concurrent asyncio callers (caller *k* takes tasks *k*, *k*+C, ...), so the group
    commit sees C appends at a time. Baseline, the *raw batched ceiling*: the same events
    built by :class:`rows.Chain` (the library's encoding, hash chain and fold) in waves of
    C tasks, stage by stage, written 100 events (and one upsert per event) per
    transaction.

rebuild
    ``store.rebuild()`` on the log the lifecycle wrote. Baseline: one ``sqlite3`` query
    over every event row, then ``decode_payload``, a ``RecordedEvent`` and ``fold`` per
    row; it writes no projection, while ``rebuild()`` also replaces the ``tasks`` table.

verify
    ``store.verify()`` on the same log. Baseline: ``hashlib.sha256`` over exactly the bytes
    the chain covers, compared with the stored hash (so it proves it hashed the same bytes).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Final

import msgspec

from common import (
    Comparison,
    Figure,
    Outcome,
    Row,
    Say,
    Settings,
    in_order,
    rates,
    remove_db,
    timed,
)
from rows import (
    SELECT_EVENTS,
    Chain,
    create_schema,
    event_rows,
    raw_batched,
    raw_connect,
    read_log,
    recorded,
)
from tasktrail import (
    Event,
    NewEvent,
    OutputAppended,
    SQLiteEventStore,
    Task,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    fold,
)
from tasktrail.store._chain import GENESIS
from tasktrail.store._plan import EventRow, TaskRow
from tasktrail.store._sqlite_commit import INSERT_EVENT, UPSERT_TASK

EVENTS_PER_TASK: Final = 4
_SELECT_BYTES: Final = SELECT_EVENTS.replace(" data,", " CAST(data AS BLOB),")
_encode_header = msgspec.json.Encoder().encode


def task_id(index: int) -> str:
    return f"task-{index:08d}"


def worker_name(index: int, callers: int) -> str:
    """The worker (caller) that handles task number ``index``; also the events' actor."""
    return f"worker-{index % callers:04d}"


def lifecycle(index: int, worker: str) -> tuple[Event, ...]:
    """The four payloads of task number ``index``, in order."""
    return (
        TaskCreated(
            agent="bench",
            prompt=f"summarise report {index} in three sentences",
            description="core benchmark task",
            metadata={"index": index, "source": "benchmarks/core.py"},
        ),
        TaskClaimed(worker_id=worker, attempt=1),
        TaskStarted(session_id=f"session-{index:08d}"),
        TaskCompleted(result={"index": index, "summary": "done", "tokens": 128}),
    )


# -- 1. append ------------------------------------------------------------------------------------


def _batch(size: int, index: int) -> list[Event]:
    """The ``size`` events of one append: a whole task when ``size`` >= 4 (created,
    claimed, started, outputs, completed), else its first ``size`` events."""
    created = TaskCreated(agent="bench", prompt=f"summarise report {index}")
    full: list[Event] = [created, TaskClaimed(worker_id="w", attempt=1), TaskStarted()]
    full += [OutputAppended(text=f"line {n} of task {index}") for n in range(max(0, size - 4))]
    full.append(TaskCompleted(result=None))
    return full[:size] if size < 4 else full


async def _append_run(path: Path, size: int, callers: int, appends: int) -> float:
    async def caller(indices: range) -> None:
        for index in indices:
            events = [NewEvent(p, actor="bench") for p in _batch(size, index)]
            await store.append(task_id(index), events, expected_version=0)

    async with SQLiteEventStore(path) as store:
        gc.collect()
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for number in range(callers):
                group.create_task(caller(range(number, appends, callers)))
        elapsed = time.perf_counter() - start
        if await store.head() != appends * size:
            raise RuntimeError(f"append run: expected {appends * size} events")
    return elapsed


def _raw_append(path: Path, events: list[EventRow], upserts: list[TaskRow], per: int) -> float:
    """Seconds to write the same rows, ``per`` appends per commit (one upsert each)."""
    db = raw_connect(path)
    try:
        create_schema(db)
        size = len(events) // len(upserts)
        gc.collect()
        start = time.perf_counter()
        for first in range(0, len(upserts), per):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT_EVENT, events[first * size : (first + per) * size])
            db.executemany(UPSERT_TASK, upserts[first : first + per])
            db.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        db.close()


def part_append(s: Settings, say: Say) -> Outcome:
    """Scenario 1: append throughput by events per call and concurrent callers."""
    out = Outcome()
    seconds: dict[str, list[float]] = {}
    for repetition in range(s.repeat):
        with tempfile.TemporaryDirectory(prefix="tasktrail-append-", dir=s.directory) as tmp:
            for size in s.append_batches:
                for callers in s.append_callers:
                    events = s.append_events if size * callers > 1 else s.append_events // 5
                    appends = max(callers, events // size)
                    key = f"{size}x{callers}"
                    path, raw = Path(tmp, f"a-{key}.db"), Path(tmp, f"raw-{key}.db")
                    elapsed = asyncio.run(_append_run(path, size, callers, appends))
                    log = read_log(path)
                    last = [u for e, u in zip(log.events, log.upserts, strict=True) if e[3] == size]
                    raw_elapsed = _raw_append(raw, log.events, last, callers)
                    seconds.setdefault(key, []).append(elapsed)
                    seconds.setdefault(f"raw_{key}", []).append(raw_elapsed)
                    seconds.setdefault(f"events_{key}", []).append(appends * size)
                    say(
                        f"{repetition + 1}/{s.repeat} append batch {size:>3} x {callers:>3} "
                        f"callers: {appends * size / elapsed:>9,.0f} events/s, raw "
                        f"{appends * size / raw_elapsed:>9,.0f} events/s"
                    )
                    remove_db(path)
                    remove_db(raw)
    for size in s.append_batches:
        for callers in s.append_callers:
            key = f"{size}x{callers}"
            counts = [int(n) for n in seconds[f"events_{key}"]]
            c = Comparison(
                f"append_{key}",
                f"Append, {size} event(s) per call, {callers} caller(s), events/s",
                Figure("store.append()", "events/s", rates(counts, seconds[key])),
                Figure(
                    f"raw, {size * callers} events per commit",
                    "events/s",
                    rates(counts, seconds[f"raw_{key}"]),
                ),
            )
            out.rows.append(Row(1, c))
    out.data["seconds"] = seconds
    return out


# -- 2, 4, 6. lifecycle, rebuild, verify ---------------------------------------------------------


async def _worker(store: SQLiteEventStore, indices: Iterable[int], callers: int) -> None:
    for index in indices:
        stream, worker, version = task_id(index), worker_name(index, callers), 0
        for payload in lifecycle(index, worker):
            result = await store.append(
                stream, [NewEvent(payload, actor=worker)], expected_version=version
            )
            version = result.version


async def _lifecycle(path: Path, tasks: int, callers: int) -> tuple[float, int]:
    async with SQLiteEventStore(path) as store:
        gc.collect()
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for caller in range(callers):
                group.create_task(_worker(store, range(caller, tasks, callers), callers))
        elapsed = time.perf_counter() - start
        return elapsed, await store.head()


def tasktrail_lifecycle(path: Path, tasks: int, callers: int) -> tuple[float, int]:
    """``(seconds, events in the log)`` of ``tasks`` lifecycles through the store."""
    return asyncio.run(_lifecycle(path, tasks, callers))


def raw_rows(tasks: int, callers: int) -> tuple[list[EventRow], list[TaskRow]]:
    """The rows of the raw lifecycle baseline: one event row and one task row per event,
    in waves of ``callers`` tasks, each wave stage by stage (as the callers interleave)."""
    plan: list[tuple[str, Event, str]] = []
    for first in range(0, tasks, callers):
        wave = range(first, min(first + callers, tasks))
        payloads = {i: lifecycle(i, worker_name(i, callers)) for i in wave}
        plan.extend(
            (task_id(i), payloads[i][stage], worker_name(i, callers))
            for stage in range(EVENTS_PER_TASK)
            for i in wave
        )
    return Chain().rows(plan)


async def _store_call(path: Path, action: str) -> tuple[float, int]:
    async with SQLiteEventStore(path) as store:
        gc.collect()
        start = time.perf_counter()
        count = await store.rebuild() if action == "rebuild" else (await store.verify()).events
        return time.perf_counter() - start, count


def tasktrail_rebuild(path: Path) -> tuple[float, int]:
    """``(seconds, tasks rebuilt)`` of ``store.rebuild()``."""
    return asyncio.run(_store_call(path, "rebuild"))


def tasktrail_verify(path: Path) -> tuple[float, int]:
    """``(seconds, events checked)`` of ``store.verify()``."""
    return asyncio.run(_store_call(path, "verify"))


def raw_rebuild(path: Path) -> tuple[float, int]:
    """``(seconds, tasks folded)``: read every event, decode it, fold it, in a plain loop."""
    db = sqlite3.connect(path)

    def replay() -> int:
        tasks: dict[str, Task] = {}
        for row in event_rows(db):
            tasks[row[2]] = fold(tasks.get(row[2]), recorded(row))
        return len(tasks)

    try:
        return timed(replay)
    finally:
        db.close()


def raw_verify(path: Path) -> tuple[float, int]:
    """``(seconds, events hashed)``: sha256 over the bytes the chain covers, row by row.
    Raises if a digest differs from the stored hash: then it did not hash the same bytes."""
    db = sqlite3.connect(path)

    def chain() -> int:
        previous, count = GENESIS.encode(), 0
        sha256, join, encode = hashlib.sha256, b"".join, _encode_header
        for row in db.execute(_SELECT_BYTES):
            digest = sha256(join((previous, b"\n", encode(row[:10]), b"\n", row[10]))).hexdigest()
            if digest != row[11]:
                raise RuntimeError(f"hash mismatch at {row[0]}: the chain format changed")
            previous, count = digest.encode(), count + 1
        return count

    try:
        return timed(chain)
    finally:
        db.close()


def part_core(s: Settings, say: Say) -> Outcome:
    """Scenarios 2 (store lifecycle), 4 (rebuild) and 6 (verify), each beside its
    baseline; tasktrail first on even repetitions, the baseline first on odd ones."""
    events = s.lifecycle_tasks * EVENTS_PER_TASK
    say(f"building the raw baseline's {events:,} rows ...")
    built = raw_rows(s.lifecycle_tasks, s.callers)
    seconds: dict[str, list[float]] = {}
    for repetition in range(s.repeat):
        with tempfile.TemporaryDirectory(prefix="tasktrail-core-", dir=s.directory) as tmp:
            library, raw = Path(tmp, "tasktrail.db"), Path(tmp, "raw.db")
            pairs = [
                (
                    (
                        "lifecycle",
                        partial(tasktrail_lifecycle, library, s.lifecycle_tasks, s.callers),
                        events,
                    ),
                    ("raw_lifecycle", partial(raw_batched, raw, *built), events),
                ),
                (
                    ("rebuild", partial(tasktrail_rebuild, library), s.lifecycle_tasks),
                    ("raw_rebuild", partial(raw_rebuild, library), s.lifecycle_tasks),
                ),
                (
                    ("verify", partial(tasktrail_verify, library), events),
                    ("raw_verify", partial(raw_verify, library), events),
                ),
            ]
            for pair in pairs:
                for key, run, expected in in_order(repetition, pair):
                    elapsed, count = run()
                    if count != expected:
                        raise RuntimeError(f"{key}: expected a count of {expected}, got {count}")
                    seconds.setdefault(key, []).append(elapsed)
                    say(
                        f"{repetition + 1}/{s.repeat} {key:<14} {elapsed:7.2f} s "
                        f"{events / elapsed:>10,.0f} events/s"
                    )
    out = Outcome(data={"seconds": seconds, "raw_batch_events": 100})
    n = s.lifecycle_tasks

    def pair(key: str, label: str, baseline: str, unit: str, amount: int) -> tuple[Figure, ...]:
        return (
            Figure(label, unit, rates(amount, seconds[key])),
            Figure(baseline, unit, rates(amount, seconds[f"raw_{key}"])),
        )

    c = Comparison(
        "lifecycle_tasks",
        f"Store lifecycle ({n:,} tasks, 4 appends each, {s.callers} callers), tasks/s",
        *pair("lifecycle", "store.append() x 4", "raw batched ceiling", "tasks/s", n),
    )
    out.rows.append(Row(2, c, ">= 0.40 of raw", c.ratio >= 0.40))
    c = Comparison(
        "rebuild",
        f"Rebuild, {events // 1000}k events, events/s",
        *pair("rebuild", "store.rebuild()", "raw read+decode+fold", "events/s", events),
    )
    out.rows.append(Row(4, c, ">= 0.60 of raw", c.ratio >= 0.60))
    c = Comparison(
        "verify",
        f"Verify, {events // 1000}k events, events/s",
        *pair("verify", "store.verify()", "raw sqlite3 + hashlib sha256", "events/s", events),
    )
    out.rows.append(Row(6, c, ">= 500,000 events/s", c.tasktrail.median >= 500_000))
    return out
