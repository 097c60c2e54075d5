"""The seven scenarios of ``run.py``, each measured beside its baseline in the same run.

Each ``scenario_*`` function takes the run's :class:`Settings` and a ``say`` callback for
progress lines and returns the :class:`Row` s of the results table plus the raw samples for
the JSON file. ``run.py`` holds the command line and the output; ``core.py``,
``runtime.py``, ``peers.py``, ``history.py`` and ``probe.py`` the measurements themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import core
import history
import runtime
from core import Comparison, Figure
from tasktrail import (
    NewEvent,
    OutputAppended,
    RecordedEvent,
    SQLiteEventStore,
    Task,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    fold,
)
from tasktrail.events import Event, decode_payload
from tasktrail.store._plan import EventRow, TaskRow, task_row

HERE: Final = Path(__file__).resolve().parent
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run is sized by (``run.py`` fills it from the command line)."""

    quick: bool
    repeat: int
    lifecycle_tasks: int
    """Tasks of the store-level lifecycle (core.py), whose log rebuild and verify reuse."""
    callers: int
    runtime_tasks: int
    """No-op tasks of the TaskManager end-to-end run (runtime.py)."""
    max_running: int
    samples: int
    append_events: int
    append_batches: tuple[int, ...]
    append_callers: tuple[int, ...]
    peers: tuple[str, ...]
    sweep_tasks: int
    sweep_levels: tuple[int, ...]
    replay_tasks: int
    live: int
    histories: tuple[int, ...]
    directory: str | None
    cache: Path


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table: a comparison, and the target it answers, if any."""

    number: int
    """The scenario (1 to 7)."""
    comparison: Comparison
    target: str = ""
    met: bool | None = None

    def as_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "scenario": self.number,
            "name": c.scenario,
            "tasktrail": c.tasktrail.as_json(),
            "baseline": c.baseline.as_json(),
            "ratio": c.ratio,
            "target": self.target or None,
            "met": self.met,
        }


@dataclass(slots=True)
class Outcome:
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _rates(amount: int | Sequence[int], seconds: Sequence[float]) -> tuple[float, ...]:
    amounts = [amount] * len(seconds) if isinstance(amount, int) else list(amount)
    return tuple(n / s for n, s in zip(amounts, seconds, strict=True))


def _short(count: float) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.0f}"


# -- 1. durable append throughput vs batch size and callers ---------------------------------


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
            await store.append(f"task-{index:08d}", events, expected_version=0)

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


def _append_rows(path: Path, size: int) -> tuple[list[EventRow], list[TaskRow]]:
    """The event rows ``path`` holds and one task row per append (each append is one task)."""
    db = sqlite3.connect(path)
    try:
        events: list[EventRow] = db.execute(runtime._SELECT_ROWS).fetchall()
    finally:
        db.close()
    upserts: list[TaskRow] = []
    tasks: dict[str, Task] = {}
    for row in events:
        payload = decode_payload(row[4], row[5], row[10], sequence=row[0])
        task = tasks[row[2]] = fold(tasks.get(row[2]), RecordedEvent(*row[:10], payload, row[11]))
        if row[3] == size:
            upserts.append(task_row(task, row[0]))
    return events, upserts


def _raw_append(
    path: Path, events: list[EventRow], upserts: list[TaskRow], size: int, callers: int
) -> float:
    """Seconds to write the same rows with stdlib sqlite3, ``callers`` appends per commit."""
    db = core.raw_connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        for statement in runtime._schema():
            db.execute(statement)
        db.execute("COMMIT")
        per = size * callers
        gc.collect()
        start = time.perf_counter()
        for first in range(0, len(events), per):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(core._INSERT_EVENT, events[first : first + per])
            db.executemany(core._UPSERT_TASK, upserts[first // size : (first + per) // size])
            db.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        db.close()


def scenario_append(s: Settings, say: Say) -> Outcome:
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
                    rows = _append_rows(path, size)
                    raw_elapsed = _raw_append(raw, *rows, size, callers)
                    seconds.setdefault(key, []).append(elapsed)
                    seconds.setdefault(f"raw_{key}", []).append(raw_elapsed)
                    seconds.setdefault(f"events_{key}", []).append(appends * size)
                    say(
                        f"{repetition + 1}/{s.repeat} append batch {size:>3} x {callers:>3} "
                        f"callers: {appends * size / elapsed:>9,.0f} events/s, raw "
                        f"{appends * size / raw_elapsed:>9,.0f} events/s"
                    )
                    for file in (path, raw):
                        for suffix in ("", "-wal", "-shm"):
                            Path(f"{file}{suffix}").unlink(missing_ok=True)
    for size in s.append_batches:
        for callers in s.append_callers:
            key = f"{size}x{callers}"
            counts = [int(n) for n in seconds[f"events_{key}"]]
            out.rows.append(
                Row(
                    1,
                    Comparison(
                        f"append_{key}",
                        f"Append, {size} event(s) per call, {callers} caller(s), events/s",
                        Figure("store.append()", "events/s", _rates(counts, seconds[key])),
                        Figure(
                            f"raw, {size * callers} events per commit",
                            "events/s",
                            _rates(counts, seconds[f"raw_{key}"]),
                        ),
                    ),
                )
            )
    out.data["seconds"] = seconds
    return out


# -- 2, 4, 6. store lifecycle, rebuild, verify (core.py) --------------------------------------


def scenario_core(s: Settings, say: Say) -> Outcome:
    """Store-level lifecycle (2), rebuild (4) and verify (6) beside their raw baselines."""
    config = core.Config(s.lifecycle_tasks, s.callers, s.repeat, s.directory, None)
    seconds = core.measure(config, say)
    out = Outcome(data={"seconds": seconds})
    for c in core.compare(config, seconds):
        if not c.key.startswith("lifecycle"):
            name, unit = c.scenario.split(", ", 1)
            c = dataclasses.replace(c, scenario=f"{name}, {_short(config.events)} events, {unit}")
        if c.key.startswith("lifecycle"):
            out.rows.append(Row(2, c, ">= 0.40 of raw", c.ratio >= 0.40))
        elif c.key.startswith("rebuild"):
            out.rows.append(Row(4, c, ">= 0.60 of raw", c.ratio >= 0.60))
        else:
            met = c.tasktrail.median >= 500_000
            out.rows.append(Row(6, c, ">= 500,000 events/s", met))
    return out


# -- 2, 3. the TaskManager end to end and launch latency (runtime.py) -------------------------


def scenario_runtime(s: Settings, say: Say) -> Outcome:
    config = runtime.Config(
        tasks=s.runtime_tasks,
        concurrency=s.max_running,
        repeat=s.repeat,
        samples=s.samples,
        live=s.live,
        history=max(s.histories),
        full=False,
        directory=s.directory,
        json_path=None,
    )
    results = runtime.Results()
    with tempfile.TemporaryDirectory(prefix="tasktrail-runtime-", dir=s.directory) as tmp:
        idle: runtime.Log | None = None
        run: runtime.Log | None = None
        for number in range(s.repeat):
            directory = Path(tmp, f"run-{number}")
            directory.mkdir()
            repetition = runtime.Repetition(number, config, directory, results, say)
            idle = repetition.pair(repetition.idle, repetition.raw_idle, idle)
            run = repetition.pair(repetition.run, repetition.raw_run, run)
            repetition.watch()
            for file in directory.iterdir():
                file.unlink()
    seconds, counts, latencies = results.seconds, results.counts, results.latencies

    def rate(label: str, key: str, unit: str) -> Figure:
        amounts = counts[f"{key}_{unit.split('/')[0]}"]
        return Figure(label, unit, _rates(amounts, seconds[key]))

    def latency(label: str, key: str, fraction: float) -> Figure:
        return Figure(
            label, "ms", tuple(runtime.percentile(x, fraction) * 1000 for x in latencies[key])
        )

    out = Outcome(data={"seconds": seconds, "counts": counts, "notes": results.notes})
    ceiling = rate("raw batched ceiling", "raw_throughput", "tasks/s")
    for key, name in (("throughput", "wait() on every task"), ("throughput_watch", "one watcher")):
        c = Comparison(
            f"{key}_tasks",
            f"TaskManager end to end, {name}, tasks/s",
            rate("TaskManager", key, "tasks/s"),
            ceiling,
        )
        out.rows.append(Row(2, c, ">= 0.40 of raw", c.ratio >= 0.40))
    floor = {q: latency("raw single commit, idle", "raw_commit", q) for q in (0.5, 0.99)}
    for key, name in (("idle", "idle"), ("load", "under load")):
        for fraction, label in ((0.5, "p50"), (0.99, "p99")):
            out.rows.append(
                Row(
                    3,
                    Comparison(
                        f"launch_{key}_{label}",
                        f"Launch to durable, {name}, {label}",
                        latency("tm.launch()", key, fraction),
                        floor[fraction],
                    ),
                )
            )
    out.data["latency_samples_s"] = latencies
    return out


# -- 2, 4. the peers ------------------------------------------------------------------------


def _peer(system: str, tasks: int, concurrency: int, directory: str, replay: bool) -> Any:
    command = [
        sys.executable, str(HERE / "peers.py"), system, "--tasks", str(tasks),
        "--concurrency", str(concurrency), "--dir", directory,
    ]  # fmt: skip
    if replay:
        command.append("--replay")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scenario_peers(s: Settings, say: Say) -> Outcome:
    """Throughput vs concurrency for tasktrail and each peer (2), and replay beside
    eventsourcing's notification log (4); every run in a fresh interpreter."""
    systems = ("tasktrail", *s.peers)
    runs: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tasktrail-peers-", dir=s.directory) as tmp:
        for repetition in range(s.repeat):
            order = systems[repetition % len(systems) :] + systems[: repetition % len(systems)]
            for level in s.sweep_levels:
                for system in order:
                    result = _peer(system, s.sweep_tasks, level, tmp, replay=False)
                    runs.append(result)
                    say(
                        f"{repetition + 1}/{s.repeat} {system:<13} concurrency {level:>3}: "
                        f"{result['tasks'] / result['seconds']:>8,.0f} tasks/s"
                    )
            if "eventsourcing" in s.peers:
                for system, level in (("tasktrail", s.max_running), ("eventsourcing", 8)):
                    result = _peer(system, s.replay_tasks, level, tmp, replay=True)
                    replays.append(result)
                    say(
                        f"{repetition + 1}/{s.repeat} {system:<13} replay of "
                        f"{result['events']:,} events: "
                        f"{result['events'] / result['replay_seconds']:>9,.0f} events/s"
                    )
    out = Outcome(data={"runs": runs, "replays": replays})
    sweep: dict[str, dict[int, Figure]] = {}
    for system in systems:
        for level in s.sweep_levels:
            mine = [r for r in runs if r["system"] == system and r["concurrency"] == level]
            rates = tuple(r["tasks"] / r["seconds"] for r in mine)
            sweep.setdefault(system, {})[level] = Figure(system, "tasks/s", rates)
    out.data["sweep"] = {
        system: {str(level): f.as_json() for level, f in levels.items()}
        for system, levels in sweep.items()
    }
    out.data["configs"] = {r["system"]: r["config"] for r in runs}

    def best(system: str) -> tuple[int, Figure]:
        return max(sweep[system].items(), key=lambda item: item[1].median)

    level, ours = best("tasktrail")
    fastest = max(s.peers, key=lambda p: best(p)[1].median) if s.peers else None
    for peer in s.peers:
        peer_level, theirs = best(peer)
        c = Comparison(
            f"peer_{peer}",
            f"Task throughput vs {peer} ({s.sweep_tasks:,} tasks, each at its best "
            f"concurrency: {level} and {peer_level}), tasks/s",
            Figure(f"TaskManager, concurrency {level}", "tasks/s", ours.samples),
            Figure(f"{peer}, concurrency {peer_level}", "tasks/s", theirs.samples),
        )
        if peer == fastest:
            out.rows.append(Row(2, c, ">= 10 x the fastest peer", c.ratio >= 10))
        else:
            out.rows.append(Row(2, c))
    if replays:
        figures = {
            system: Figure(
                label,
                "events/s",
                tuple(r["events"] / r["replay_seconds"] for r in replays if r["system"] == system),
            )
            for system, label in (
                ("tasktrail", "store.rebuild()"),
                ("eventsourcing", "eventsourcing notification log + fold"),
            )
        }
        out.rows.append(
            Row(
                4,
                Comparison(
                    "replay_vs_eventsourcing",
                    f"Replay of {_short(s.replay_tasks * 4)} events vs eventsourcing, events/s",
                    figures["tasktrail"],
                    figures["eventsourcing"],
                ),
            )
        )
    out.data["sweep_figures"] = sweep
    return out


# -- 5, 7. recovery and memory --------------------------------------------------------------


def _probe(path: Path, concurrency: int) -> dict[str, float]:
    command = [sys.executable, str(HERE / "probe.py"), str(path), "--concurrency", str(concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def scenario_recovery(s: Settings, say: Say) -> Outcome:
    """Recovery of ``live`` tasks at every history size (5) and resident size (7), both
    from one fresh-process probe per measurement, on copies of cached logs."""
    out = Outcome()
    templates: dict[int, tuple[Path, int]] = {}
    for size in s.histories:
        path, events, built = history.cached(s.cache, history=size, live=s.live)
        templates[size] = (path, events)
        megabytes = path.stat().st_size / 1e6
        say(
            f"log of {events:,} events ({megabytes:,.0f} MB), {s.live:,} live: "
            + (f"built in {built:.1f} s" if built else "from the cache")
        )
        out.data[f"history_{size}"] = {"events": events, "mb": megabytes, "build_s": built}
    seconds: dict[str, list[float]] = {}
    memory: dict[str, list[dict[str, float]]] = {}
    # 6 at scale: verify the middle log (read only) beside the raw loop, before recovery.
    middle = sorted(templates)[len(templates) // 2]
    middle_path, middle_events = templates[middle]
    for repetition in range(s.repeat):
        sides = ("tasktrail", "raw") if repetition % 2 == 0 else ("raw", "tasktrail")
        for side in sides:
            verify = core.tasktrail_verify if side == "tasktrail" else core.raw_verify
            elapsed, count = verify(middle_path)
            if count != middle_events:
                raise RuntimeError(f"{side} verify checked {count} of {middle_events} events")
            key = "verify" if side == "tasktrail" else "raw_verify"
            seconds.setdefault(key, []).append(elapsed)
            say(
                f"{repetition + 1}/{s.repeat} {key} of {_short(count)} events: "
                f"{count / elapsed:,.0f} events/s"
            )
    with tempfile.TemporaryDirectory(prefix="tasktrail-recovery-", dir=s.directory) as tmp:
        for repetition in range(s.repeat):
            empty = Path(tmp, "empty.db")
            _remove(empty)
            memory.setdefault("empty", []).append(_probe(empty, s.max_running))
            _remove(empty)
            for size, (template, events) in templates.items():
                check = repetition == 0 and size == min(templates)
                tag = f"{repetition + 1}/{s.repeat}"
                sides = ("tasktrail", "raw") if repetition % 2 == 0 else ("raw", "tasktrail")
                for side in sides:
                    # Both sides write into the cached log itself; history.scratch throws
                    # the writes away afterwards (no 4.5 GB copies).
                    with history.scratch(template, events=events, live=s.live) as path:
                        if side == "raw":
                            elapsed = runtime.raw_recovery(path, path, s.live, check)
                            seconds.setdefault(f"raw_recovery_{size}", []).append(elapsed)
                            say(f"{tag} raw recovery at {_short(size)} events: {elapsed:.3f} s")
                            continue
                        result = _probe(path, s.max_running)
                        if result["live"] != s.live:
                            raise RuntimeError(f"{result['live']} live tasks after recovery")
                        runtime._check_recovered(path, s.live)
                    seconds.setdefault(f"recovery_{size}", []).append(result["recover_s"])
                    memory.setdefault(str(size), []).append(result)
                    say(
                        f"{tag} recovery at {_short(size)} events: "
                        f"{result['recover_s']:.3f} s, resident {result['rss_mb']:.0f} MB "
                        f"(peak {result['peak_mb']:.0f} MB)"
                    )
    out.data["seconds"] = seconds
    out.data["memory"] = memory
    c = Comparison(
        "verify_large",
        f"Verify, {_short(middle_events)} events, events/s",
        Figure("store.verify()", "events/s", _rates(middle_events, seconds["verify"])),
        Figure(
            "raw sqlite3 + hashlib sha256", "events/s", _rates(middle_events, seconds["raw_verify"])
        ),
    )
    out.rows.append(Row(6, c, ">= 500,000 events/s", c.tasktrail.median >= 500_000))
    sizes = sorted(templates)
    for size in sizes:
        events = templates[size][1]
        c = Comparison(
            f"recovery_{size}",
            f"Recovery, {s.live:,} live tasks, {_short(events)} events in the log, s",
            Figure("TaskManager open (fresh process)", "s", tuple(seconds[f"recovery_{size}"])),
            Figure("raw recovery", "s", tuple(seconds[f"raw_recovery_{size}"])),
        )
        out.rows.append(Row(5, c, "< 1 s", c.tasktrail.median < 1.0))
    small, large = sizes[0], sizes[-1]
    growth = tuple(
        b / a
        for a, b in zip(seconds[f"recovery_{small}"], seconds[f"recovery_{large}"], strict=True)
    )
    raw_growth = tuple(
        b / a
        for a, b in zip(
            seconds[f"raw_recovery_{small}"], seconds[f"raw_recovery_{large}"], strict=True
        )
    )
    c = Comparison(
        "recovery_growth",
        f"Recovery time at {_short(large)} over {_short(small)} events (flat = 1)",
        Figure("TaskManager", "x", growth),
        Figure("raw recovery", "x", raw_growth),
    )
    out.rows.append(Row(5, c, "flat: within 1.25 x the raw growth", c.ratio <= 1.25))
    base = Figure("empty database", "MB", tuple(m["rss_mb"] for m in memory["empty"]))
    for size in sizes:
        finished = max(0, size - 3 * s.live) // 4
        c = Comparison(
            f"memory_{size}",
            f"Resident size, {s.live:,} live + {_short(finished)} finished tasks, MB",
            Figure("TaskManager process", "MB", tuple(m["rss_mb"] for m in memory[str(size)])),
            base,
        )
        out.rows.append(Row(7, c))
    grow = tuple(
        b["rss_mb"] / a["rss_mb"]
        for a, b in zip(memory[str(small)], memory[str(large)], strict=True)
    )
    peak = tuple(
        b["peak_mb"] / a["peak_mb"]
        for a, b in zip(memory[str(small)], memory[str(large)], strict=True)
    )
    finished_small = max(0, small - 3 * s.live) // 4
    finished_large = max(0, large - 3 * s.live) // 4
    c = Comparison(
        "memory_growth",
        f"Resident size with {_short(finished_large)} over {_short(finished_small)} finished "
        "tasks (independent = 1)",
        Figure("resident now", "x", grow),
        Figure("peak (VmHWM)", "x", peak),
    )
    out.rows.append(
        Row(7, c, "independent: <= 1.10", max(c.tasktrail.median, c.baseline.median) <= 1.10)
    )
    return out


def live_environment() -> dict[str, Any]:
    """Load average now, for the record."""
    return {"loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
