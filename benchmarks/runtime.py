"""The TaskManager end to end, each figure beside a raw sqlite3 baseline.

Run ``python benchmarks/runtime.py --help`` for the options; benchmarks/README.md explains
the figures and holds the ones measured on the project's machines. The helpers shared with
``core.py`` (its raw batched writer, the version and machine notes) are imported from it, so
run this file as a script from the repository (its directory is then on ``sys.path``).

Scenarios
---------

throughput
    ``--tasks`` no-op tasks (``async def noop(ctx): return None``) go through
    ``TaskManager(path, max_running=--concurrency, poll_interval=0.5, task_ttl=None)``:
    launched in ``asyncio.gather`` chunks of 500, then ``tm.wait``-ed on, all at once.
    The clock runs from the first launch until every task is completed. A probe (see
    *latency under load*) launches more tasks one at a time during the run; they count
    too. Reported as tasks/s and events/s; the events are counted from the log afterwards
    (4 per task today: created, claimed and started in one append, completed).

    A second run, *throughput, one watcher*, is the same but learns that everything
    finished by polling the store (one query after each commit) instead of one ``wait()``
    per task, and has no probe: the gap between the two is the cost of ``wait()``.

    Baseline, the *raw batched ceiling* of ``core.py`` (its own ``raw_lifecycle``): stdlib
    ``sqlite3`` on a fresh file, same schema, WAL and ``synchronous=FULL``, 100 events per
    ``BEGIN IMMEDIATE ... COMMIT``, writing the very event rows the manager wrote (copied
    from its log, byte for byte, in log order) and one ``tasks`` upsert per event (the
    store's ``task_row`` of the fold so far). The manager writes one upsert per append, 3
    per task, so the baseline writes a little more than tasktrail does.

latency
    How long ``await tm.launch(...)`` takes: it returns once the task is durable.
    *Idle*: ``--samples`` launches one after another on a manager with ``run_tasks=False``
    and no runner. *Under load*: a probe launching one task at a time (with a 5 ms pause
    between launches) throughout the throughput run, on the same manager. Reported as p50,
    p99 and max in milliseconds (nearest rank).

    Baseline, *raw single commit*: stdlib ``sqlite3`` writing the same ``task.created``
    rows as the idle run (copied from its log) one per ``BEGIN IMMEDIATE ... COMMIT``
    (one event row and one upsert each), WAL, ``synchronous=FULL``, on an idle file. It
    is the baseline of both latency rows: the floor one durable commit sets here.

recovery
    A database holds ``--live`` tasks left ``running`` by a dead worker (``TaskCreated`` +
    ``TaskClaimed`` + ``TaskStarted`` appended through the store; the worker registered on
    this host with the pid of a process that has exited), after finished tasks that pad
    the log to about H events. Measured: ``async with TaskManager(path, ...)``, whose
    ``__aenter__`` runs ``recover()``, until it returns; then every live task must be
    ``pending`` again. Run at H = ``--history`` / 10 and ``--history`` (and 10 x with
    ``--full``), to show that the cost follows the live tasks, not the history.

    Baseline, *raw recovery*: stdlib ``sqlite3`` on a copy of the same file, from opening
    it: read the ``running`` rows and the log's tail, and for each task make the same
    decision (``tasktrail.runtime.recovery.decide``), encode it, chain its hash, fold it;
    write 100 events and their upserts per transaction, ``synchronous=FULL``.

Fairness
--------

Every run uses fresh files in one directory under ``--dir`` (default the system temp
directory), so both sides of a pair share the disk, the schema, the SQLite library and the
durability. Each measurement is repeated ``--repeat`` times; tasktrail goes first on even
repetitions and its baseline on odd ones (a baseline that copies rows from the log then
uses the previous repetition's). The median and the range are reported; the ratio is
tasktrail's median over the baseline's, so below 1 means slower for a rate and above 1
means slower for a latency or a duration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import msgspec

import history as history_logs
from core import (
    _INSERT_EVENT,
    _UPSERT_TASK,
    Comparison,
    EventRow,
    Figure,
    environment,
    markdown_table,
    raw_connect,
    raw_lifecycle,
)
from core import Config as CoreConfig
from tasktrail import (
    RecordedEvent,
    SQLiteEventStore,
    Task,
    TaskManager,
    fold,
)
from tasktrail.events import EVENT_TAGS, decode_payload, encode_payload
from tasktrail.runtime.recovery import decide, owner_is_dead
from tasktrail.store._chain import event_hash
from tasktrail.store._migrate import migrations
from tasktrail.store._plan import TaskRow, task_row
from tasktrail.store._workers import WorkerInfo

AGENT: Final = "bench"
LAUNCH_CHUNK: Final = 500
"""Launches per ``asyncio.gather`` in the throughput run."""
PROBE_PAUSE: Final = 0.005
"""Seconds the under-load probe pauses between two launches."""
POLL_INTERVAL: Final = 0.5
RAW_BATCH: Final = 100
"""Events per transaction in the raw baselines (as in core.py)."""
LIVE: Final = ("pending", "starting", "running")

_SELECT_ROWS: Final = (
    "SELECT seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, "
    "reason, correlation_id, data, hash FROM events ORDER BY seq"
)
_decode_task = msgspec.json.Decoder(Task).decode


async def noop(ctx: object) -> None:
    """The runner of every benchmark task: does nothing."""


# -- figures -------------------------------------------------------------------------------


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` of 1) of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# -- reading a log back ----------------------------------------------------------------------


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


def read_log(path: Path) -> Log:
    """Every event row of ``path`` as stored, and the ``tasks`` row after each event."""
    db = sqlite3.connect(path)
    try:
        rows: list[EventRow] = db.execute(_SELECT_ROWS).fetchall()
    finally:
        db.close()
    state: dict[str, Task] = {}
    upserts: list[TaskRow] = []
    for row in rows:
        payload = decode_payload(row[4], row[5], row[10], sequence=row[0])
        task = state[row[2]] = fold(state.get(row[2]), RecordedEvent(*row[:10], payload, row[11]))
        upserts.append(task_row(task, row[0]))
    return Log(rows, upserts, len(state), dict(Counter(row[4] for row in rows)))


# -- throughput and latency under load -------------------------------------------------------


@dataclass(slots=True)
class Throughput:
    seconds: float
    tasks: int
    latencies: list[float] = field(default_factory=list)
    """Seconds of each probe launch (the under-load latency)."""


async def _throughput(path: Path, tasks: int, concurrency: int, *, watch: bool) -> Throughput:
    """Launch ``tasks`` no-op tasks and wait until all completed; with ``watch``, learn it
    by polling the store instead of ``tm.wait``, and send no probe."""
    manager = TaskManager(path, max_running=concurrency, poll_interval=POLL_INTERVAL, task_ttl=None)
    async with manager as tm:
        tm.register(AGENT, noop)
        bulk_done = asyncio.Event()
        latencies: list[float] = []
        probe_ids: list[str] = []

        async def probe() -> None:
            while not bulk_done.is_set():
                start = time.perf_counter()
                task = await tm.launch(AGENT, f"probe {len(probe_ids)}")
                latencies.append(time.perf_counter() - start)
                probe_ids.append(task.id)
                await asyncio.sleep(PROBE_PAUSE)

        gc.collect()
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            if not watch:
                group.create_task(probe())
            ids: list[str] = []
            for first in range(0, tasks, LAUNCH_CHUNK):
                chunk = range(first, min(first + LAUNCH_CHUNK, tasks))
                launched = await asyncio.gather(
                    *(tm.launch(AGENT, f"summarise report {i}") for i in chunk)
                )
                ids.extend(task.id for task in launched)
            if watch:
                while await tm.store.list_tasks(state=LIVE, limit=1):
                    await tm.store.wait_for_commit(POLL_INTERVAL)
                finished = await tm.store.get_tasks(ids)
            else:
                finished = await asyncio.gather(*(tm.wait(task_id) for task_id in ids))
            bulk_done.set()
        finished += await asyncio.gather(*(tm.wait(task_id) for task_id in probe_ids))
        elapsed = time.perf_counter() - start
    states = Counter(task.state.value for task in finished)
    if states != {"completed": tasks + len(probe_ids)}:
        raise RuntimeError(f"expected every task completed, got {dict(states)}")
    return Throughput(elapsed, tasks + len(probe_ids), latencies)


def tasktrail_throughput(path: Path, tasks: int, concurrency: int, watch: bool) -> Throughput:
    return asyncio.run(_throughput(path, tasks, concurrency, watch=watch))


# -- idle latency ------------------------------------------------------------------------------


async def _idle_latency(path: Path, samples: int) -> list[float]:
    async with TaskManager(path, run_tasks=False, poll_interval=POLL_INTERVAL, task_ttl=None) as tm:
        gc.collect()
        latencies = []
        for index in range(samples):
            start = time.perf_counter()
            await tm.launch(AGENT, f"summarise report {index}")
            latencies.append(time.perf_counter() - start)
    return latencies


def tasktrail_idle_latency(path: Path, samples: int) -> list[float]:
    """Seconds of each of ``samples`` launches, one at a time, on an idle manager."""
    return asyncio.run(_idle_latency(path, samples))


def raw_single_commits(path: Path, log: Log) -> list[float]:
    """Seconds of each commit writing one event row and its upsert (the log's rows)."""
    db = raw_connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        for statement in _schema():
            db.execute(statement)
        db.execute("COMMIT")
        gc.collect()
        latencies = []
        for event, upsert in zip(log.events, log.upserts, strict=True):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute(_INSERT_EVENT, event)
            db.execute(_UPSERT_TASK, upsert)
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        db.close()


def _schema() -> list[str]:
    """tasktrail's schema, every migration's statements in order."""
    return [statement for _n, _name, statements in migrations() for statement in statements]


# -- recovery ----------------------------------------------------------------------------------


def build_history(path: Path, live: int, history: int) -> tuple[int, float]:
    """A database of ``live`` tasks running under a dead worker, after finished tasks that
    bring the log to about ``history`` events; returns (events, seconds to build)."""
    start = time.perf_counter()
    padding = max(0, history - 3 * live) // 4
    events = history_logs.build(path, finished=padding, live=live)
    return events, time.perf_counter() - start


def _copy(template: Path, target: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, target)


def _check_recovered(path: Path, live: int) -> None:
    db = sqlite3.connect(path)
    try:
        counts = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    finally:
        db.close()
    if counts.get("pending", 0) != live or counts.get("running") or counts.get("starting"):
        raise RuntimeError(f"expected {live} pending tasks after recovery, got {counts}")


async def _recover(path: Path, concurrency: int) -> float:
    manager = TaskManager(path, max_running=concurrency, poll_interval=POLL_INTERVAL, task_ttl=None)
    gc.collect()
    start = time.perf_counter()
    async with manager:
        return time.perf_counter() - start


def tasktrail_recovery(template: Path, path: Path, live: int, concurrency: int) -> float:
    """Seconds of ``TaskManager.__aenter__`` (which recovers) on a copy of ``template``."""
    _copy(template, path)
    elapsed = asyncio.run(_recover(path, concurrency))
    _check_recovered(path, live)
    return elapsed


def raw_recovery(template: Path, path: Path, live: int, check: bool) -> float:
    """Seconds to record, with stdlib sqlite3, the decision for every running task of a
    dead worker on a copy of ``template`` (``check``: verify the result with the store);
    ``path`` may be ``template`` itself, then nothing is copied."""
    if path != template:
        _copy(template, path)
    host = socket.gethostname()
    gc.collect()
    start = time.perf_counter()
    db = raw_connect(path)
    try:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        workers = {
            row[0]: WorkerInfo(*row) for row in db.execute("SELECT * FROM workers").fetchall()
        }
        why = {
            worker_id: owner_is_dead(worker, now=now, lease_timeout=30.0, host=host)
            for worker_id, worker in workers.items()
        }
        records = db.execute(
            "SELECT record FROM tasks WHERE state IN ('starting', 'running') "
            "ORDER BY created_at, id"
        ).fetchall()
        sequence, previous = db.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        events: list[EventRow] = []
        rows: list[TaskRow] = []
        for (record,) in records:
            task = _decode_task(record)
            reason = why.get(task.worker_id or "")
            if reason is None:
                continue
            new = decide(task, reason)
            data = encode_payload(new.payload)
            sequence += 1
            header = (
                sequence, new.event_id, task.id, task.version + 1, EVENT_TAGS[type(new.payload)],
                new.payload.schema_version, now, new.actor, new.reason, new.correlation_id,
            )  # fmt: skip
            previous = event_hash(previous, header, data)
            after = fold(task, RecordedEvent(*header, new.payload, previous))
            events.append((*header, data.decode(), previous))
            rows.append(task_row(after, sequence))
            if len(events) == RAW_BATCH:
                db.executemany(_INSERT_EVENT, events)
                db.executemany(_UPSERT_TASK, rows)
                db.execute("COMMIT")
                db.execute("BEGIN IMMEDIATE")
                events, rows = [], []
        db.executemany(_INSERT_EVENT, events)
        db.executemany(_UPSERT_TASK, rows)
        db.execute("COMMIT")
    finally:
        db.close()
    elapsed = time.perf_counter() - start
    _check_recovered(path, live)
    if check:
        asyncio.run(_check_store(path))
    return elapsed


async def _check_store(path: Path) -> None:
    async with SQLiteEventStore(path) as store:
        await store.verify()
        if wrong := await store.check_projection():
            raise RuntimeError(f"the raw recovery wrote wrong task rows: {wrong[:3]}")


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    tasks: int
    concurrency: int
    repeat: int
    samples: int
    live: int
    history: int
    full: bool
    directory: str | None
    json_path: Path | None

    @property
    def histories(self) -> list[int]:
        """The history sizes recovery runs at."""
        sizes = [self.history // 10, self.history]
        return [*sizes, self.history * 10] if self.full else sizes


@dataclass(slots=True)
class Results:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    """Durations by run key, one per repetition."""
    latencies: dict[str, list[list[float]]] = field(default_factory=dict)
    """Every latency sample (seconds) by run key, one list per repetition."""
    counts: dict[str, list[int]] = field(default_factory=dict)
    """Tasks and events each run handled, by key, one per repetition."""
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        self.seconds.setdefault(key, []).append(seconds)

    def count(self, key: str, amount: int) -> None:
        self.counts.setdefault(key, []).append(amount)


@dataclass(slots=True)
class Repetition:
    """One repetition of every run, in its own directory."""

    number: int
    config: Config
    directory: Path
    results: Results
    say: Callable[[str], None]

    @property
    def tasktrail_first(self) -> bool:
        return self.number % 2 == 0

    def report(self, key: str, text: str) -> None:
        self.say(f"{self.number + 1}/{self.config.repeat} {key:<24} {text}")

    def pair(
        self, library: Callable[[], Log], raw: Callable[[Log], None], previous: Log | None
    ) -> Log:
        """Run tasktrail and its baseline, in this repetition's order; the baseline copies
        the rows of this run's log, or of the previous repetition's when it goes first."""
        if self.tasktrail_first or previous is None:
            log = library()
            raw(log)
            return log
        raw(previous)
        return library()

    def idle(self) -> Log:
        path = self.directory / "idle.db"
        latencies = tasktrail_idle_latency(path, self.config.samples)
        self.results.latencies.setdefault("idle", []).append(latencies)
        self.report("launch, idle", _percentiles(latencies))
        return read_log(path)

    def raw_idle(self, log: Log) -> None:
        latencies = raw_single_commits(self.directory / "raw-idle.db", log)
        self.results.latencies.setdefault("raw_commit", []).append(latencies)
        self.report("raw single commit", _percentiles(latencies))

    def run(self) -> Log:
        path = self.directory / "run.db"
        done = tasktrail_throughput(path, self.config.tasks, self.config.concurrency, watch=False)
        log = read_log(path)
        if log.tasks != done.tasks:
            raise RuntimeError(f"{done.tasks} tasks ran but the log holds {log.tasks}")
        results = self.results
        results.add("throughput", done.seconds)
        results.count("throughput_tasks", done.tasks)
        results.count("throughput_events", len(log.events))
        results.latencies.setdefault("load", []).append(done.latencies)
        results.notes.setdefault("throughput_event_types", []).append(log.types)
        self.report(
            "throughput",
            f"{done.seconds:7.2f} s {done.tasks / done.seconds:>8,.0f} tasks/s "
            f"({done.tasks:,} tasks, {log.events_per_task:g} events each)",
        )
        self.report(
            "launch, under load", f"{_percentiles(done.latencies)} ({len(done.latencies)} probes)"
        )
        return log

    def raw_run(self, log: Log) -> None:
        elapsed, count = raw_lifecycle(self.directory / "raw-run.db", log.events, log.upserts)
        if count != len(log.events):
            raise RuntimeError(f"the raw ceiling wrote {count} of {len(log.events)} events")
        self.results.add("raw_throughput", elapsed)
        self.results.count("raw_throughput_tasks", log.tasks)
        self.results.count("raw_throughput_events", count)
        self.report("raw batched ceiling", f"{elapsed:7.2f} s {log.tasks / elapsed:>8,.0f} tasks/s")

    def watch(self) -> None:
        path = self.directory / "watch.db"
        done = tasktrail_throughput(path, self.config.tasks, self.config.concurrency, watch=True)
        self.results.add("throughput_watch", done.seconds)
        self.results.count("throughput_watch_tasks", done.tasks)
        self.report(
            "throughput, one watcher",
            f"{done.seconds:7.2f} s {done.tasks / done.seconds:>8,.0f} tasks/s",
        )

    def recovery(self, templates: dict[int, Path]) -> None:
        live = self.config.live
        for history, template in templates.items():
            check = self.number == 0 and history == min(templates)
            runs: list[tuple[str, Callable[[], float]]] = [
                (
                    f"recovery_{history}",
                    partial(
                        tasktrail_recovery,
                        template,
                        self.directory / "recover.db",
                        live,
                        self.config.concurrency,
                    ),
                ),
                (
                    f"raw_recovery_{history}",
                    partial(raw_recovery, template, self.directory / "raw.db", live, check),
                ),
            ]
            for key, action in runs if self.tasktrail_first else runs[::-1]:
                elapsed = action()
                self.results.add(key, elapsed)
                self.report(key, f"{elapsed:7.2f} s ({live / elapsed:,.0f} tasks/s)")


def measure(config: Config, say: Callable[[str], None]) -> Results:
    """Build the recovery databases, then every run over ``config.repeat`` repetitions."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="tasktrail-runtime-", dir=config.directory) as tmp:
        base = Path(tmp)
        templates: dict[int, Path] = {}
        for history in config.histories:
            template = templates[history] = base / f"history-{history}.db"
            events, seconds = build_history(template, config.live, history)
            size = template.stat().st_size / 1e6
            say(
                f"built {config.live:,} live tasks in a log of {events:,} events "
                f"({size:,.0f} MB) in {seconds:.1f} s"
            )
            results.notes[f"history_{history}"] = {"events": events, "mb": size, "build_s": seconds}
        idle: Log | None = None
        run: Log | None = None
        for number in range(config.repeat):
            directory = base / f"run-{number}"
            directory.mkdir()
            repetition = Repetition(number, config, directory, results, say)
            idle = repetition.pair(repetition.idle, repetition.raw_idle, idle)
            run = repetition.pair(repetition.run, repetition.raw_run, run)
            repetition.watch()
            repetition.recovery(templates)
            shutil.rmtree(directory)
    return results


def _percentiles(latencies: Sequence[float]) -> str:
    if not latencies:
        return "no samples"
    return "  ".join(
        f"{name} {percentile(latencies, fraction) * 1000:6.2f} ms"
        for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    )


def compare(config: Config, results: Results) -> list[Comparison]:
    """The figures, each beside its baseline."""
    seconds, counts, latencies = results.seconds, results.counts, results.latencies

    def rate(label: str, key: str, unit: str) -> Figure:
        amounts = counts[f"{key}_{unit.split('/')[0]}"]
        return Figure(label, unit, tuple(n / s for n, s in zip(amounts, seconds[key], strict=True)))

    def latency(label: str, key: str, fraction: float) -> Figure:
        return Figure(label, "ms", tuple(percentile(s, fraction) * 1000 for s in latencies[key]))

    comparisons = [
        Comparison(
            "throughput_tasks",
            "End to end, tasks/s",
            rate("TaskManager", "throughput", "tasks/s"),
            rate("raw batched ceiling", "raw_throughput", "tasks/s"),
        ),
        Comparison(
            "throughput_events",
            "End to end, events/s",
            rate("TaskManager", "throughput", "events/s"),
            rate("raw batched ceiling", "raw_throughput", "events/s"),
        ),
        Comparison(
            "throughput_watch_tasks",
            "End to end, one watcher instead of wait(), tasks/s",
            rate("TaskManager", "throughput_watch", "tasks/s"),
            rate("raw batched ceiling", "raw_throughput", "tasks/s"),
        ),
    ]
    for key, name in (("idle", "idle"), ("load", "under load")):
        for fraction, label in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
            comparisons.append(
                Comparison(
                    f"launch_{key}_{label}",
                    f"Launch latency {name}, {label}",
                    latency("tm.launch()", key, fraction),
                    latency("raw single commit, idle", "raw_commit", fraction),
                )
            )
    for history in config.histories:
        events = results.notes[f"history_{history}"]["events"]
        comparisons.append(
            Comparison(
                f"recovery_{history}",
                f"Recovery, {config.live:,} live tasks, {_short(events)} events in the log",
                Figure("TaskManager open", "s", tuple(seconds[f"recovery_{history}"])),
                Figure("raw recovery", "s", tuple(seconds[f"raw_recovery_{history}"])),
            )
        )
    return comparisons


def _short(count: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return str(count)


def _load(loadavg: Sequence[float] | None) -> str:
    return "unknown" if loadavg is None else " ".join(f"{x:.2f}" for x in loadavg)


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="tasktrail's TaskManager (throughput, launch latency, recovery) beside "
        "raw sqlite3."
    )
    parser.add_argument("--tasks", type=int, help="tasks per throughput run (default 10000)")
    parser.add_argument("--concurrency", type=int, help="the manager's max_running (default 200)")
    parser.add_argument("--repeat", type=int, help="repetitions of each measurement (default 3)")
    parser.add_argument("--samples", type=int, help="idle launch latency samples (default 500)")
    parser.add_argument("--live", type=int, help="tasks recovery finds running (default 10000)")
    parser.add_argument(
        "--history",
        type=int,
        help="events in the largest recovery log (default 1000000); also run at a tenth",
    )
    parser.add_argument(
        "--full", action="store_true", help="also run recovery at 10 x --history events"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2000 tasks, 1 repetition, 200 live tasks, 20000 events of history",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--dir", help="where the database files go (default: the system temp directory)"
    )
    args = parser.parse_args(argv)
    names = ("tasks", "concurrency", "repeat", "samples", "live", "history")
    defaults = (
        (2000, 200, 1, 500, 200, 20_000) if args.quick else (10_000, 200, 3, 500, 10_000, 1_000_000)
    )
    values = {
        name: getattr(args, name) if getattr(args, name) is not None else default
        for name, default in zip(names, defaults, strict=True)
    }
    for name in names:
        if values[name] < 1:
            parser.error(f"--{name} must be at least 1")
    if values["history"] // 10 < 3 * values["live"]:
        parser.error("--history must be at least 30 x --live (the live tasks' own events)")
    return Config(**values, full=args.full, directory=args.dir, json_path=args.json)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    context = environment(
        CoreConfig(config.tasks, config.concurrency, config.repeat, config.directory, None)
    )
    machine = context["machine"]
    if machine["bench_dir_filesystem"] in ("tmpfs", "ramfs"):
        print(
            f"warning: {machine['bench_dir']} is {machine['bench_dir_filesystem']}: fsync is free "
            "there, so durable figures mean little; pass --dir on a real disk",
            file=sys.stderr,
        )
    print(
        f"tasktrail runtime benchmark: {config.tasks:,} tasks, max_running "
        f"{config.concurrency}, {config.samples} idle launches, recovery of {config.live:,} "
        f"live tasks in logs of {', '.join(_short(h) for h in config.histories)} events, "
        f"{config.repeat} repetition(s); python {context['versions']['python']}, sqlite "
        f"{sqlite3.sqlite_version}, {machine['nproc']} CPUs, load average "
        f"{_load(machine['loadavg'])}, files on {machine['bench_dir_filesystem']} "
        f"({machine['bench_dir']})"
    )
    started = time.perf_counter()
    results = measure(config, lambda line: print(f"  {line}", flush=True))
    comparisons = compare(config, results)
    print()
    for c in comparisons:
        print(f"{c.scenario}")
        print(f"  tasktrail: {c.tasktrail.show()}")
        print(f"  {c.baseline.label}: {c.baseline.show()}")
        print(f"  ratio tasktrail / baseline: {c.ratio:.2f}")
    print()
    print(markdown_table(comparisons))
    context["machine"]["loadavg_after"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    print(
        f"\n(the whole run took {time.perf_counter() - started:.0f} s; load average "
        f"{_load(context['machine']['loadavg_after'])} at the end)"
    )
    if config.json_path is not None:
        result = {
            "benchmark": "runtime",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "config": {
                "tasks": config.tasks,
                "max_running": config.concurrency,
                "repeat": config.repeat,
                "idle_samples": config.samples,
                "live": config.live,
                "histories": config.histories,
                "poll_interval": POLL_INTERVAL,
                "launch_chunk": LAUNCH_CHUNK,
                "probe_pause_s": PROBE_PAUSE,
                "raw_batch_events": RAW_BATCH,
                "synchronous": "FULL",
                "journal_mode": "WAL",
            },
            **context,
            "seconds": results.seconds,
            "counts": results.counts,
            "latency_samples_s": results.latencies,
            "notes": results.notes,
            "figures": {
                c.key: {
                    "scenario": c.scenario,
                    "tasktrail": c.tasktrail.as_json(),
                    "baseline": c.baseline.as_json(),
                    "ratio": c.ratio,
                }
                for c in comparisons
            },
        }
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {config.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
