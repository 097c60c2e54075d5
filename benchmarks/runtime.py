"""``TaskManager`` end to end (scenario 2), the backlog drain (2) and launch latency (3),
each beside a raw ``sqlite3`` baseline in the same run.

The tasktrail workloads here are also what ``peers.py`` runs for tasktrail (one watcher,
at each concurrency) and what ``profiling.py`` profiles, so every figure of a scenario
comes from the same code.

end to end
    N no-op tasks (:func:`common.noop`) through ``TaskManager(path, max_running=200,
    poll_interval=0.5)``: launched in ``asyncio.gather`` chunks of 500, then ``tm.wait``-ed
    on, one ``wait()`` per task; the clock runs from the first launch until every task is
    completed. A probe launches more tasks one at a time during the run (the latency under
    load); they count too. *One watcher*: the same without the probe, learning that
    everything finished by one query after each commit (``store.list_tasks(state=live,
    limit=1)`` after ``store.wait_for_commit``) instead of a ``wait()`` per task.
    Baseline, the *raw batched ceiling*: the very rows the run wrote (read back from its
    log) written 100 events per transaction, one ``tasks`` upsert per event.

backlog drain
    N tasks launched first by a launch-only :class:`~tasktrail.AsyncClient` (untimed),
    then one ``TaskManager(max_running=200)`` opened on them with the no-op runner and a
    ``wait()`` per task; the clock runs from opening the manager until every wait
    returned. Baseline: the rows the drain wrote (everything after the launches) written
    the same raw batched way onto a file that already holds the launches' rows.

launch latency
    ``await client.launch(...)`` returns once the task is durable. *Idle*: launches one
    after another on an ``AsyncClient``. *Under load*: the probe of the end-to-end run.
    Baseline, *one raw commit*: the idle run's rows, one event and its upsert per
    ``BEGIN IMMEDIATE ... COMMIT``, on an idle file.

Every side of a pair runs on a fresh file in the same directory; tasktrail goes first on
even repetitions and its baseline on odd ones (then copying the previous repetition's log).
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    AGENT,
    LAUNCH_CHUNK,
    LIVE,
    POLL_INTERVAL,
    PROBE_PAUSE,
    Comparison,
    Figure,
    Outcome,
    Row,
    Say,
    Settings,
    noop,
    percentile,
    percentiles,
    rates,
)
from rows import Log, raw_batched, raw_single_commits, read_log
from tasktrail import AsyncClient, TaskManager

# -- the tasktrail workloads -----------------------------------------------------------------------


@dataclass(slots=True)
class Throughput:
    seconds: float
    tasks: int
    latencies: list[float] = field(default_factory=list)
    """Seconds of each probe launch (the latency under load)."""


async def _launch_all(client: AsyncClient, tasks: int) -> list[str]:
    ids: list[str] = []
    for first in range(0, tasks, LAUNCH_CHUNK):
        chunk = range(first, min(first + LAUNCH_CHUNK, tasks))
        launched = await asyncio.gather(
            *(client.launch(AGENT, f"summarise report {i}") for i in chunk)
        )
        ids.extend(task.id for task in launched)
    return ids


async def end_to_end(
    path: Path, tasks: int, max_running: int, *, watch: bool, probe: bool
) -> Throughput:
    """Launch ``tasks`` no-op tasks and wait until all completed: by a ``wait()`` per task,
    or with ``watch`` by one query after each commit; ``probe`` also launches one task at
    a time meanwhile and times each launch."""
    manager = TaskManager(path, max_running=max_running, poll_interval=POLL_INTERVAL)
    async with manager as tm:
        tm.register(AGENT, noop)
        bulk_done = asyncio.Event()
        latencies: list[float] = []
        probe_ids: list[str] = []

        async def probing() -> None:
            while not bulk_done.is_set():
                start = time.perf_counter()
                task = await tm.launch(AGENT, f"probe {len(probe_ids)}")
                latencies.append(time.perf_counter() - start)
                probe_ids.append(task.id)
                await asyncio.sleep(PROBE_PAUSE)

        gc.collect()
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            if probe:
                group.create_task(probing())
            ids = await _launch_all(tm, tasks)
            if watch:
                while await tm.store.list_tasks(state=LIVE, limit=1):
                    await tm.store.wait_for_commit(POLL_INTERVAL)
                finished = await tm.store.get_tasks(ids)
            else:
                finished = await asyncio.gather(*(tm.wait(task_id) for task_id in ids))
            bulk_done.set()
        finished += await asyncio.gather(*(tm.wait(task_id) for task_id in probe_ids))
        elapsed = time.perf_counter() - start
    _all_completed(finished, tasks + len(probe_ids))
    return Throughput(elapsed, tasks + len(probe_ids), latencies)


def _all_completed(finished: list[Any], expected: int) -> None:
    states = Counter(task.state.value for task in finished)
    if states != {"completed": expected}:
        raise RuntimeError(f"expected {expected} tasks completed, got {dict(states)}")


async def launch_backlog(path: Path, tasks: int) -> tuple[list[str], int]:
    """Launch ``tasks`` tasks with a launch-only client; return their ids and the log's
    head afterwards."""
    async with AsyncClient(path, poll_interval=POLL_INTERVAL) as client:
        ids = await _launch_all(client, tasks)
    db = sqlite3.connect(path)
    try:
        head: int = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    finally:
        db.close()
    return ids, head


async def drain(path: Path, ids: list[str], max_running: int) -> float:
    """Seconds from opening a manager on a backlog until a ``wait()`` per task returned."""
    gc.collect()
    start = time.perf_counter()
    async with TaskManager(path, max_running=max_running, poll_interval=POLL_INTERVAL) as tm:
        tm.register(AGENT, noop)
        finished = await asyncio.gather(*(tm.wait(task_id) for task_id in ids))
        elapsed = time.perf_counter() - start
    _all_completed(list(finished), len(ids))
    return elapsed


async def idle_launches(path: Path, samples: int) -> list[float]:
    """Seconds of each of ``samples`` launches, one at a time, on an idle client."""
    async with AsyncClient(path, poll_interval=POLL_INTERVAL) as client:
        gc.collect()
        latencies = []
        for index in range(samples):
            start = time.perf_counter()
            await client.launch(AGENT, f"summarise report {index}")
            latencies.append(time.perf_counter() - start)
    return latencies


# -- the repetitions ------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    """Durations by run key, one per repetition."""
    counts: dict[str, list[int]] = field(default_factory=dict)
    """Tasks and events each run handled, by key, one per repetition."""
    latencies: dict[str, list[list[float]]] = field(default_factory=dict)
    """Every latency sample (seconds) by run key, one list per repetition."""
    notes: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, key: str, seconds: float, tasks: int, events: int | None = None) -> None:
        self.seconds.setdefault(key, []).append(seconds)
        self.counts.setdefault(f"{key}_tasks", []).append(tasks)
        if events is not None:
            self.counts.setdefault(f"{key}_events", []).append(events)

    def note(self, key: str, value: Any) -> None:
        self.notes.setdefault(key, []).append(value)

    def rate(self, label: str, key: str) -> Figure:
        return Figure(label, "tasks/s", rates(self.counts[f"{key}_tasks"], self.seconds[key]))

    def latency(self, label: str, key: str, fraction: float) -> Figure:
        samples = self.latencies[key]
        return Figure(label, "ms", tuple(percentile(x, fraction) * 1000 for x in samples))

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "counts": self.counts,
            "latency_samples_s": self.latencies,
            "notes": self.notes,
        }


def paired(
    repetition: int, library: Callable[[], Log], raw: Callable[[Log], None], previous: Log | None
) -> Log:
    """Run tasktrail and its baseline in this repetition's order; the baseline copies the
    rows of this run's log, or of the previous repetition's when it goes first."""
    if repetition % 2 == 0 or previous is None:
        log = library()
        raw(log)
        return log
    raw(previous)
    return library()


class _Repetition:
    def __init__(self, number: int, s: Settings, directory: Path, results: Results, say: Say):
        self.number, self.s, self.directory, self.results = number, s, directory, results
        self._say = say

    def say(self, key: str, text: str) -> None:
        self._say(f"{self.number + 1}/{self.s.repeat} {key:<26} {text}")

    def raw(self, key: str, log: Log, preload: Log | None = None) -> None:
        path = self.directory / f"raw-{key}.db"
        elapsed, count = raw_batched(path, log.events, log.upserts, preload=preload)
        expected = len(log.events) + (0 if preload is None else len(preload.events))
        if count != expected:
            raise RuntimeError(f"the raw writer wrote {count} of {expected} events")
        self.results.add(f"raw_{key}", elapsed, log.tasks, len(log.events))
        self.say(f"raw batched ({key})", f"{elapsed:7.2f} s {log.tasks / elapsed:>8,.0f} tasks/s")

    def idle(self) -> Log:
        path = self.directory / "idle.db"
        latencies = asyncio.run(idle_launches(path, self.s.samples))
        self.results.latencies.setdefault("idle", []).append(latencies)
        self.say("launch, idle", percentiles(latencies))
        return read_log(path)

    def raw_idle(self, log: Log) -> None:
        latencies = raw_single_commits(self.directory / "raw-idle.db", log)
        self.results.latencies.setdefault("raw_commit", []).append(latencies)
        self.say("one raw commit", percentiles(latencies))

    def throughput(self, key: str, *, watch: bool) -> Log:
        path = self.directory / f"{key}.db"
        s = self.s
        done = asyncio.run(end_to_end(path, s.runtime_tasks, s.max_running, watch=watch,
                                      probe=not watch))  # fmt: skip
        log = read_log(path)
        if log.tasks != done.tasks:
            raise RuntimeError(f"{done.tasks} tasks ran but the log holds {log.tasks}")
        self.results.add(key, done.seconds, done.tasks, len(log.events))
        self.results.note(f"{key}_event_types", log.types)
        self.results.note(f"{key}_commits", log.commits)
        self.say(
            key,
            f"{done.seconds:7.2f} s {done.tasks / done.seconds:>8,.0f} tasks/s "
            f"({done.tasks:,} tasks, {log.events_per_task:g} events each, "
            f"{len(log.events) / log.commits:.1f} events per commit)",
        )
        if not watch:
            self.results.latencies.setdefault("load", []).append(done.latencies)
            self.say("launch, under load", f"{percentiles(done.latencies)} "
                     f"({len(done.latencies)} probes)")  # fmt: skip
        return log

    def backlog(self) -> Log:
        path = self.directory / "backlog.db"
        ids, head = asyncio.run(launch_backlog(path, self.s.backlog_tasks))
        elapsed = asyncio.run(drain(path, ids, self.s.max_running))
        log = read_log(path)
        drained = log.after(head)
        self.results.add("backlog", elapsed, len(ids), len(drained.events))
        self.results.note("backlog_event_types", drained.types)
        self.results.note("backlog_launch_head", head)
        self.results.note("backlog_commits", drained.commits)
        self.say(
            "backlog drain",
            f"{elapsed:7.2f} s {len(ids) / elapsed:>8,.0f} tasks/s "
            f"({drained.events_per_task:g} events per task after the launch, "
            f"{len(drained.events) / drained.commits:.1f} events per commit)",
        )
        return log


def part_runtime(s: Settings, say: Say) -> Outcome:
    """Scenario 2 (TaskManager end to end, with a wait() per task and with one watcher)
    and 3 (launch latency, idle and under load)."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="tasktrail-runtime-", dir=s.directory) as tmp:
        previous: dict[str, Log | None] = {"idle": None, "wait": None, "watch": None}
        for number in range(s.repeat):
            directory = Path(tmp, f"run-{number}")
            directory.mkdir()
            rep = _Repetition(number, s, directory, results, say)
            previous["idle"] = paired(number, rep.idle, rep.raw_idle, previous["idle"])
            for key in ("wait", "watch"):

                def library(rep: _Repetition = rep, key: str = key) -> Log:
                    return rep.throughput(key, watch=key == "watch")

                def raw(log: Log, rep: _Repetition = rep, key: str = key) -> None:
                    rep.raw(key, log)

                previous[key] = paired(number, library, raw, previous[key])
            for file in directory.iterdir():
                file.unlink()
    out = Outcome(data=results.as_json())
    n = s.runtime_tasks
    for key, name in (("wait", "a wait() per task"), ("watch", "one watcher")):
        c = Comparison(
            f"end_to_end_{key}",
            f"TaskManager end to end, {name} ({n:,} tasks, max_running {s.max_running}), tasks/s",
            results.rate("TaskManager", key),
            results.rate("raw batched ceiling", f"raw_{key}"),
        )
        out.rows.append(Row(2, c, ">= 0.50 of raw", c.ratio >= 0.50))
    one = results.latency("one raw commit, idle", "raw_commit", 0.5)
    c = Comparison(
        "launch_idle_p50",
        "Launch to durable, idle, p50",
        results.latency("client.launch()", "idle", 0.5),
        one,
    )
    out.rows.append(Row(3, c, "<= 2 x one raw commit", c.ratio <= 2.0))
    p99 = results.latency("one raw commit, idle", "raw_commit", 0.99)
    out.rows.append(
        Row(
            3,
            Comparison(
                "launch_idle_p99",
                "Launch to durable, idle, p99",
                results.latency("client.launch()", "idle", 0.99),
                p99,
            ),
        )
    )
    for fraction, label, base in ((0.5, "p50", one), (0.99, "p99", p99)):
        c = Comparison(
            f"launch_load_{label}",
            f"Launch to durable, under load (during the wait() run), {label}",
            results.latency("tm.launch()", "load", fraction),
            base,
        )
        out.rows.append(Row(3, c))
    return out


def part_backlog(s: Settings, say: Say) -> Outcome:
    """Scenario 2: a backlog launched first, drained by one manager with a wait() per task."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="tasktrail-backlog-", dir=s.directory) as tmp:
        previous: Log | None = None
        for number in range(s.repeat):
            directory = Path(tmp, f"run-{number}")
            directory.mkdir()
            rep = _Repetition(number, s, directory, results, say)

            def raw(log: Log, rep: _Repetition = rep) -> None:
                head = results.notes["backlog_launch_head"][-1]
                rep.raw("backlog", log.after(head), preload=log.upto(head))

            previous = paired(number, rep.backlog, raw, previous)
            for file in directory.iterdir():
                file.unlink()
    out = Outcome(data=results.as_json())
    c = Comparison(
        "backlog",
        f"Backlog drain ({s.backlog_tasks:,} tasks launched first; one manager, max_running "
        f"{s.max_running}, a wait() per task), tasks/s",
        results.rate("TaskManager", "backlog"),
        results.rate("raw batched, the drain's rows", "raw_backlog"),
    )
    out.rows.append(Row(2, c, ">= 0.50 of raw", c.ratio >= 0.50))
    return out
