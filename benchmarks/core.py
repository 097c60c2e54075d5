"""Core throughput of tasktrail's SQLite store, each figure beside a raw sqlite3 baseline.

Run ``python benchmarks/core.py --help`` for the options; benchmarks/README.md explains the
figures and holds the ones measured on the project's machines.

Scenarios
---------

lifecycle
    ``--tasks`` tasks each go through the whole lifecycle (``TaskCreated``, ``TaskClaimed``,
    ``TaskStarted``, ``TaskCompleted``), one ``append`` per event with ``expected_version``,
    as a worker would. ``--callers`` asyncio tasks share the work, each looping over its
    share of the tasks, so the store's group commit sees that many concurrent appends.
    Durable: ``SQLiteEventStore`` with its default ``synchronous=FULL`` on a fresh file.
    Reported as tasks/s and events/s (4 events per task); the clock runs from the first
    append to the last answer, so opening the store and creating the schema are not counted
    but making each ``NewEvent`` (its payload and event id) is, as it would be in a worker.
    Each caller has one append in flight, so a group commit holds at most ``--callers``
    events.

    Baseline, the *raw batched ceiling*: stdlib ``sqlite3`` writes the same number of event
    rows and one ``tasks`` upsert per event (the statements tasktrail uses) into the same
    schema (created from tasktrail's own migration SQL) with the same durability (WAL,
    ``synchronous=FULL``), 100 events per ``BEGIN IMMEDIATE ... COMMIT``. Its rows are made
    before the clock starts: payloads from ``tasktrail.events.encode_payload`` of the very
    events the lifecycle appends, task records from ``tasktrail.projection.fold``. So the
    timed part is SQLite and fsync alone, and the ratio is the share of that ceiling
    tasktrail reaches with everything it adds (validation, encoding, the hash chain, the
    fold, the reads that plan each commit, asyncio and aiosqlite's thread hops). Its rows
    come in waves of ``--callers`` tasks, stage by stage, the order the callers produce.

rebuild
    ``store.rebuild()`` on the database the lifecycle wrote, as events replayed per second.
    Baseline, *raw read+decode+fold*: one ``sqlite3`` query over every event row, then
    ``decode_payload``, a ``RecordedEvent`` and ``fold`` per row in a plain loop. The
    baseline writes no projection, while ``rebuild()`` also replaces the ``tasks`` table,
    so the ratio understates tasktrail.

verify
    ``store.verify()`` on the same database, events per second. Baseline: one ``sqlite3``
    query over every event row and ``hashlib.sha256`` over exactly the bytes the hash chain
    covers, compared with the stored hash (so the baseline proves it hashed the same bytes).

Fairness
--------

Both sides of each pair use the same file system (a fresh directory under ``--dir``,
default the system temp directory), the same schema, the same SQLite library, the same
durability and the same rows. Every measurement is repeated ``--repeat`` times on fresh
files; the order of tasktrail and its baseline alternates between repetitions, and the
median and the range are reported. The ratio is tasktrail's median over the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import msgspec

import tasktrail
from tasktrail import (
    Event,
    NewEvent,
    RecordedEvent,
    SQLiteEventStore,
    Task,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    fold,
)
from tasktrail.events import decode_payload, encode_payload
from tasktrail.store._migrate import migrations

EVENTS_PER_TASK: Final = 4
RAW_BATCH: Final = 100
"""Events per transaction in the raw lifecycle baseline."""

# The statements and columns tasktrail uses (src/tasktrail/store/sqlite.py, 57f230f),
# copied so the baseline stays fixed while the library changes.
_INSERT_EVENT: Final = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_TASK: Final = (
    "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "state = excluded.state, version = excluded.version, last_seq = excluded.last_seq, "
    "updated_at = excluded.updated_at, record = excluded.record"
)
_SELECT_EVENTS: Final = (
    "SELECT seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, "
    "reason, correlation_id, CAST(data AS BLOB), hash FROM events ORDER BY seq"
)
_GENESIS: Final = b"0" * 64

_encode_record = msgspec.json.Encoder(order="deterministic").encode
_encode_header = msgspec.json.Encoder().encode

EventRow = tuple[int, str, str, int, str, int, float, str, None, None, str, str]
TaskRow = tuple[str, str, str, None, None, int, int, int, float, float, str]
StoredRow = tuple[int, str, str, int, str, int, float, str, str | None, str | None, bytes, str]
"""An event row as ``_SELECT_EVENTS`` reads it back (the payload as bytes)."""


# -- the workload ------------------------------------------------------------------------


def task_id(index: int) -> str:
    """The id of task number ``index``."""
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


# -- measurements --------------------------------------------------------------------------

Run = Callable[[], tuple[float, int]]
"""A measured run: ``(seconds, count)``, the count being what it processed, for a check."""


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """``(seconds, result)`` of ``run()``, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


DIGITS: Final = {"tasks/s": 0, "events/s": 0, "ms": 2, "s": 3, "x": 2, "MB": 1}
"""Decimals shown per unit."""


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity over the repetitions."""

    label: str
    unit: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def show(self) -> str:
        """``median (min..max) unit``; the range only when there are several samples."""
        digits = DIGITS.get(self.unit, 0)
        text = f"{self.median:,.{digits}f}"
        if len(self.samples) > 1:
            text += f" ({min(self.samples):,.{digits}f}..{max(self.samples):,.{digits}f})"
        return f"{text} {self.unit}"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "samples": list(self.samples),
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """A tasktrail figure beside its baseline."""

    key: str
    scenario: str
    tasktrail: Figure
    baseline: Figure

    @property
    def ratio(self) -> float:
        """tasktrail's median over the baseline's."""
        return self.tasktrail.median / self.baseline.median


# -- lifecycle -----------------------------------------------------------------------------


async def _worker(store: SQLiteEventStore, indices: Iterable[int], callers: int) -> None:
    for index in indices:
        stream, worker, version = task_id(index), worker_name(index, callers), 0
        for payload in lifecycle(index, worker):
            result = await store.append(
                stream, [NewEvent(payload, actor=worker)], expected_version=version
            )
            version = result.version


async def _tasktrail_lifecycle(path: Path, tasks: int, callers: int) -> tuple[float, int]:
    async with SQLiteEventStore(path) as store:
        gc.collect()
        start = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as group:
                for caller in range(callers):
                    group.create_task(_worker(store, range(caller, tasks, callers), callers))
        except ExceptionGroup as failed:  # one cause is enough; all callers usually share it
            first = failed.exceptions[0]
            raise RuntimeError(
                f"{len(failed.exceptions)} of {callers} callers failed; the first: {first!r}"
            ) from first
        elapsed = time.perf_counter() - start
        return elapsed, await store.head()


def tasktrail_lifecycle(path: Path, tasks: int, callers: int) -> tuple[float, int]:
    """``(seconds, events in the log)`` of ``tasks`` lifecycles through the store."""
    return asyncio.run(_tasktrail_lifecycle(path, tasks, callers))


def raw_rows(tasks: int, callers: int) -> tuple[list[EventRow], list[TaskRow]]:
    """The rows the raw baseline writes: one event row and one task row per event.

    Events come in waves of ``callers`` tasks, each wave stage by stage, much as the
    concurrent callers interleave them. Task records are real folds of the events.
    """
    now = time.time()
    events: list[EventRow] = []
    upserts: list[TaskRow] = []
    previous = _GENESIS
    state: dict[str, Task] = {}
    plan: list[tuple[int, int, Event]] = []
    for first in range(0, tasks, callers):
        wave = range(first, min(first + callers, tasks))
        payloads = {i: lifecycle(i, worker_name(i, callers)) for i in wave}
        plan.extend((i, stage, payloads[i][stage]) for stage in range(4) for i in wave)
    for sequence, (index, stage, payload) in enumerate(plan, start=1):
        stream, actor, version = task_id(index), worker_name(index, callers), stage + 1
        tag: str = payload.__struct_config__.tag  # type: ignore[assignment]
        data = encode_payload(payload)
        digest = hashlib.sha256(previous + b"\n" + data).hexdigest()
        previous = digest.encode()
        event_id = os.urandom(16).hex()
        event: EventRow = (
            sequence, event_id, stream, version, tag, payload.schema_version, now, actor,
            None, None, data.decode(), digest,
        )  # fmt: skip
        task = state[stream] = fold(state.get(stream), RecordedEvent(*event[:10], payload, digest))
        events.append(event)
        upserts.append(
            (
                stream, task.state.value, task.agent, None, None, task.priority, version,
                sequence, now, now, _encode_record(task).decode(),
            )
        )  # fmt: skip
    return events, upserts


def raw_connect(path: Path) -> sqlite3.Connection:
    """A stdlib connection with tasktrail's durability: WAL, ``synchronous=FULL``."""
    db = sqlite3.connect(path, isolation_level=None)
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"could not switch {path} to WAL (got {mode!r})")
    db.execute("PRAGMA synchronous = FULL")
    return db


def raw_lifecycle(
    path: Path, events: Sequence[EventRow], upserts: Sequence[TaskRow]
) -> tuple[float, int]:
    """``(seconds, events in the log)`` to write ``events`` and ``upserts`` on a new file,
    ``RAW_BATCH`` events (and their upserts) per transaction."""
    db = raw_connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        for _number, _name, statements in migrations():
            for statement in statements:
                db.execute(statement)
        db.execute("COMMIT")

        def write() -> int:
            for start in range(0, len(events), RAW_BATCH):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_INSERT_EVENT, events[start : start + RAW_BATCH])
                db.executemany(_UPSERT_TASK, upserts[start : start + RAW_BATCH])
                db.execute("COMMIT")
            return len(events)

        elapsed, _ = timed(write)
        return elapsed, db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()


# -- rebuild and verify --------------------------------------------------------------------


async def _tasktrail_call(path: Path, action: str) -> tuple[float, int]:
    async with SQLiteEventStore(path) as store:
        gc.collect()
        start = time.perf_counter()
        if action == "rebuild":
            count = await store.rebuild()
        else:
            count = (await store.verify()).events
        return time.perf_counter() - start, count


def tasktrail_rebuild(path: Path) -> tuple[float, int]:
    """``(seconds, tasks rebuilt)`` of ``store.rebuild()``."""
    return asyncio.run(_tasktrail_call(path, "rebuild"))


def tasktrail_verify(path: Path) -> tuple[float, int]:
    """``(seconds, events checked)`` of ``store.verify()``."""
    return asyncio.run(_tasktrail_call(path, "verify"))


def raw_rebuild(path: Path) -> tuple[float, int]:
    """``(seconds, tasks folded)``: read every event, decode it, fold it, in a plain loop."""
    db = sqlite3.connect(path)

    def replay() -> int:
        tasks: dict[str, Task] = {}
        rows: Iterable[StoredRow] = db.execute(_SELECT_EVENTS)
        for row in rows:
            payload = decode_payload(row[4], row[5], row[10], sequence=row[0])
            event = RecordedEvent(*row[:10], payload, row[11])
            tasks[row[2]] = fold(tasks.get(row[2]), event)
        return len(tasks)

    try:
        return timed(replay)
    finally:
        db.close()


def raw_verify(path: Path) -> tuple[float, int]:
    """``(seconds, events hashed)``: sha256 over the bytes the chain covers, row by row.

    Raises if a digest differs from the stored hash: then it did not hash the same bytes.
    """
    db = sqlite3.connect(path)

    def chain() -> int:
        previous, count = _GENESIS, 0
        sha256, join, encode = hashlib.sha256, b"".join, _encode_header
        rows: Iterable[StoredRow] = db.execute(_SELECT_EVENTS)
        for row in rows:
            digest = sha256(join((previous, b"\n", encode(row[:10]), b"\n", row[10]))).hexdigest()
            if digest != row[11]:
                raise RuntimeError(f"hash mismatch at {row[0]}: the chain format changed")
            previous, count = digest.encode(), count + 1
        return count

    try:
        return timed(chain)
    finally:
        db.close()


# -- running -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    tasks: int
    callers: int
    repeat: int
    directory: str | None
    json_path: Path | None

    @property
    def events(self) -> int:
        return self.tasks * EVENTS_PER_TASK


def measure(config: Config, say: Callable[[str], None]) -> dict[str, list[float]]:
    """The seconds of every run, by key, over ``config.repeat`` repetitions on fresh files.

    Each repetition runs three pairs in turn (lifecycle, rebuild, verify; the last two on
    the file tasktrail's lifecycle wrote), tasktrail first on even repetitions and the
    baseline first on odd ones.
    """
    say(f"building the raw baseline's {config.events:,} rows ...")
    rows = raw_rows(config.tasks, config.callers)
    seconds: dict[str, list[float]] = {}
    for repetition in range(config.repeat):
        with tempfile.TemporaryDirectory(prefix="tasktrail-bench-", dir=config.directory) as tmp:
            library, raw = Path(tmp, "tasktrail.db"), Path(tmp, "raw.db")
            pairs: list[tuple[tuple[str, Run, int], tuple[str, Run, int]]] = [
                (
                    (
                        "lifecycle",
                        partial(tasktrail_lifecycle, library, config.tasks, config.callers),
                        config.events,
                    ),
                    ("raw_lifecycle", partial(raw_lifecycle, raw, *rows), config.events),
                ),
                (
                    ("rebuild", partial(tasktrail_rebuild, library), config.tasks),
                    ("raw_rebuild", partial(raw_rebuild, library), config.tasks),
                ),
                (
                    ("verify", partial(tasktrail_verify, library), config.events),
                    ("raw_verify", partial(raw_verify, library), config.events),
                ),
            ]
            for pair in pairs:
                for key, run, expected in pair if repetition % 2 == 0 else pair[::-1]:
                    elapsed, count = run()
                    if count != expected:
                        raise RuntimeError(f"{key}: expected a count of {expected}, got {count}")
                    seconds.setdefault(key, []).append(elapsed)
                    say(
                        f"{repetition + 1}/{config.repeat} {key:<14} {elapsed:7.2f} s "
                        f"{config.events / elapsed:>10,.0f} events/s"
                    )
    return seconds


_SCENARIOS: Final = (
    # run key (its baseline is raw_<key>), scenario, tasktrail label, baseline label, unit
    ("lifecycle", "Lifecycle", "tasktrail lifecycle", "raw batched ceiling", "tasks/s"),
    ("lifecycle", "Lifecycle", "tasktrail lifecycle", "raw batched ceiling", "events/s"),
    ("rebuild", "Rebuild", "store.rebuild()", "raw read+decode+fold", "events/s"),
    ("verify", "Verify", "store.verify()", "raw sqlite3 + hashlib sha256", "events/s"),
)


def compare(config: Config, seconds: dict[str, list[float]]) -> list[Comparison]:
    """Turn run times into rates, each tasktrail figure beside its baseline."""
    comparisons = []
    for key, scenario, label, baseline, unit in _SCENARIOS:
        amount = config.tasks if unit == "tasks/s" else config.events
        library_rates = tuple(amount / s for s in seconds[key])
        raw_rates = tuple(amount / s for s in seconds[f"raw_{key}"])
        comparisons.append(
            Comparison(
                f"{key}_{unit.split('/')[0]}",
                f"{scenario}, {unit}",
                Figure(label, unit, library_rates),
                Figure(baseline, unit, raw_rates),
            )
        )
    return comparisons


def markdown_table(comparisons: Sequence[Comparison]) -> str:
    """The results as a Markdown table: median (min..max) of each side and the ratio."""
    lines = [
        "| Scenario | tasktrail | Baseline | Baseline figure | tasktrail / baseline |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    lines.extend(
        f"| {c.scenario} | {c.tasktrail.show()} | {c.baseline.label} | {c.baseline.show()} "
        f"| {c.ratio:.2f} |"
        for c in comparisons
    )
    return "\n".join(lines)


# -- context for the record ----------------------------------------------------------------


def _filesystem(path: str) -> str:
    """The file system type holding ``path`` (from /proc/mounts), or ``"unknown"``."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1]
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _source() -> dict[str, Any]:
    """Where the measured tasktrail was imported from, its git commit and whether its
    package directory has uncommitted changes (``None`` outside a git checkout)."""
    package = Path(tasktrail.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"path": str(package), "commit": commit, "dirty": dirty}


def environment(config: Config) -> dict[str, Any]:
    """Versions and machine notes that belong beside the figures."""
    directory = config.directory or tempfile.gettempdir()
    return {
        "versions": {
            "python": sys.version.split()[0],
            "python_implementation": platform.python_implementation(),
            "sqlite": sqlite3.sqlite_version,
            "msgspec": msgspec.__version__,
            "aiosqlite": metadata.version("aiosqlite"),
            "tasktrail": metadata.version("tasktrail"),
        },
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "bench_dir": directory,
            "bench_dir_filesystem": _filesystem(directory),
        },
        "tasktrail_source": _source(),
    }


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="tasktrail core throughput (lifecycle, rebuild, verify) beside raw sqlite3."
    )
    parser.add_argument("--tasks", type=int, help="tasks per lifecycle run (default 20000)")
    parser.add_argument("--callers", type=int, help="concurrent asyncio callers (default 200)")
    parser.add_argument("--repeat", type=int, help="repetitions of each measurement (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 500 tasks, 20 callers, 1 repetition"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--dir", help="where the database files go (default: the system temp directory)"
    )
    args = parser.parse_args(argv)
    defaults = (500, 20, 1) if args.quick else (20_000, 200, 3)
    config = Config(
        tasks=args.tasks if args.tasks is not None else defaults[0],
        callers=args.callers if args.callers is not None else defaults[1],
        repeat=args.repeat if args.repeat is not None else defaults[2],
        directory=args.dir,
        json_path=args.json,
    )
    for name in ("tasks", "callers", "repeat"):
        if getattr(config, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    context = environment(config)
    machine = context["machine"]
    if machine["bench_dir_filesystem"] in ("tmpfs", "ramfs"):
        print(
            f"warning: {machine['bench_dir']} is {machine['bench_dir_filesystem']}: fsync is free "
            "there, so durable figures mean little; pass --dir on a real disk",
            file=sys.stderr,
        )
    print(
        f"tasktrail core benchmark: {config.tasks:,} tasks ({config.events:,} events), "
        f"{config.callers} callers, {config.repeat} repetition(s); "
        f"python {context['versions']['python']}, sqlite {sqlite3.sqlite_version}, "
        f"{machine['nproc']} CPUs, files on {machine['bench_dir_filesystem']} "
        f"({machine['bench_dir']})"
    )
    seconds = measure(config, lambda line: print(f"  {line}", flush=True))
    comparisons = compare(config, seconds)
    print()
    for c in comparisons:
        print(f"{c.scenario}")
        print(f"  tasktrail: {c.tasktrail.show()}")
        print(f"  {c.baseline.label}: {c.baseline.show()}")
        print(f"  ratio tasktrail / baseline: {c.ratio:.2f}")
    print()
    print(markdown_table(comparisons))
    if config.json_path is not None:
        context["machine"]["loadavg_after"] = (
            list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        )
        result = {
            "benchmark": "core",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "config": {
                "tasks": config.tasks,
                "callers": config.callers,
                "repeat": config.repeat,
                "events": config.events,
                "raw_batch_events": RAW_BATCH,
                "synchronous": "FULL",
                "journal_mode": "WAL",
            },
            **context,
            "seconds": seconds,
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
