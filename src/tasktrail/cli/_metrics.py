"""Prometheus text exposition (format 0.0.4) of a tasktrail database and of a worker.

Names follow the Prometheus conventions: the ``tasktrail_`` prefix, snake case, base units
in the name (``_seconds``), ``_total`` on counters, labels for the dimensions (``agent``,
``state``). ``tasktrail stats --prometheus`` prints the database's figures once (for a
node_exporter textfile collector or a push); ``tasktrail worker --metrics-port N`` serves
them at ``/metrics`` together with the worker's own counters and histograms.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tasktrail.errors import TasktrailError
from tasktrail.lifecycle import TaskState
from tasktrail.runtime._recovery import looks_live
from tasktrail.store import EventStore
from tasktrail.store._latency import CommitStatistics

__all__ = [
    "RUN_BUCKETS",
    "Family",
    "MetricsServer",
    "WorkerCounters",
    "database_families",
    "render",
]

RUN_BUCKETS: Final = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
"""Upper bounds (seconds) of the run time histogram's buckets: agent tasks run long."""

Labels = dict[str, str]


@dataclass
class Family:
    """One metric family: its name, type, help and samples ``(suffix, labels, value)``."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels | None = None, suffix: str = "") -> None:
        """Add a sample (``suffix``: ``_bucket``, ``_sum``, ``_count`` of a histogram)."""
        self.samples.append((suffix, labels or {}, value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition of ``families``."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, labels, value in family.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{suffix}{{{text}}} {_number(value)}" if text else
                         f"{family.name}{suffix} {_number(value)}")  # fmt: skip
    return "\n".join(lines) + "\n"


def histogram(
    family: Family, buckets: Sequence[tuple[float, int]], total: float, count: int, labels: Labels
) -> None:
    """Add a histogram's cumulative buckets, ``+Inf``, sum and count to ``family``."""
    for bound, seen in buckets:
        family.add(seen, {**labels, "le": _number(bound)}, "_bucket")
    family.add(count, {**labels, "le": "+Inf"}, "_bucket")
    family.add(total, labels, "_sum")
    family.add(count, labels, "_count")


async def database_families(store: EventStore, *, now: float | None = None) -> list[Family]:
    """The database's figures: tasks per agent and state, the log's length, the oldest
    pending task's wait, live workers, pauses in force. Aggregate queries over the task
    table's indexes only: a scrape reads no event."""
    now = time.time() if now is None else now
    counts = await store.task_counts()
    tasks = Family("tasktrail_tasks", "gauge", "Tasks in the projection, per agent and state.")
    for agent, states in counts.items():
        for state in TaskState:
            tasks.add(states.get(state.value, 0), {"agent": agent, "state": state.value})
    events = Family("tasktrail_events_total", "counter", "Events in the log (its head).")
    events.add(await store.head())
    oldest = await store.list_tasks(state="pending", limit=1)
    waiting = Family(
        "tasktrail_oldest_pending_task_age_seconds",
        "gauge",
        "How long the oldest pending task has waited (0: none pending).",
    )
    waiting.add(max(0.0, now - oldest[0].created_at.timestamp()) if oldest else 0.0)
    workers = await store.list_workers()
    live = Family("tasktrail_workers_live", "gauge", "Workers that look live (not stopped).")
    live.add(sum(looks_live(w, now=now) for w in workers))
    paused = Family("tasktrail_paused", "gauge", "1 for each agent or concurrency key paused now.")
    for pause in await store.list_pauses():
        paused.add(1, {"kind": pause.kind, "target": pause.target})
    finished = Family(
        "tasktrail_tasks_finished_last_hour",
        "gauge",
        "Tasks that finished in the last hour (any state).",
    )
    finished.add(await store.count_tasks(only_finished_since=now - 3600))
    return [tasks, events, waiting, live, paused, finished]


class WorkerCounters:
    """What a worker process counts as it goes (from the log it follows): claims, claims
    lost to recovery, finished tasks and their run times; and its store's commit times."""

    def __init__(self) -> None:
        self.claims = 0
        self.claims_lost = 0
        self.finished: dict[tuple[str, str], int] = {}
        self.run: dict[str, list[float]] = {}
        """Per agent: [bucket counts..., sum, count]."""

    def finished_task(self, agent: str, state: str, run_seconds: float | None) -> None:
        """Count a task this worker finished, and its run time if it started."""
        key = (agent, state)
        self.finished[key] = self.finished.get(key, 0) + 1
        if run_seconds is None:
            return
        figures = self.run.setdefault(agent, [0.0] * (len(RUN_BUCKETS) + 2))
        for index, bound in enumerate(RUN_BUCKETS):
            if run_seconds <= bound:
                figures[index] += 1
        figures[-2] += run_seconds
        figures[-1] += 1

    def families(self, worker_id: str, commits: CommitStatistics) -> list[Family]:
        """This worker's counters and histograms."""
        label = {"worker_id": worker_id}
        claims = Family("tasktrail_worker_claims_total", "counter", "Tasks this worker claimed.")
        claims.add(self.claims, label)
        lost = Family(
            "tasktrail_worker_claims_lost_total",
            "counter",
            "Claims of this worker taken over by recovery (its lease was judged expired).",
        )
        lost.add(self.claims_lost, label)
        done = Family(
            "tasktrail_worker_tasks_finished_total",
            "counter",
            "Tasks this worker ran to an end, per agent and final state.",
        )
        for (agent, state), count in sorted(self.finished.items()):
            done.add(count, {**label, "agent": agent, "state": state})
        run = Family(
            "tasktrail_worker_task_run_seconds",
            "histogram",
            "Run time of the tasks this worker finished (start to finish), per agent.",
        )
        for agent, figures in sorted(self.run.items()):
            buckets = list(zip(RUN_BUCKETS, (int(n) for n in figures[:-2]), strict=True))
            histogram(run, buckets, figures[-2], int(figures[-1]), {**label, "agent": agent})
        commit = Family(
            "tasktrail_store_commit_seconds",
            "histogram",
            "Time each commit of this process held the write lock (group commit).",
        )
        histogram(commit, commits.buckets, commits.seconds_sum, commits.commits, label)
        return [claims, lost, done, run, commit]


class MetricsServer:
    """A tiny HTTP server: ``GET /metrics`` answers ``collect()``'s text, anything else 404."""

    def __init__(self, collect: Callable[[], Any], *, host: str, port: int) -> None:
        self.collect = collect
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; returns the URL (with the port chosen when ``port`` was 0)."""
        self._server = await asyncio.start_server(self._answer, self.host, self.port)
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/metrics"

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method not in ("GET", "HEAD") or path.split("?")[0] != "/metrics":
                status, body, kind = "404 Not Found", b"not found: try /metrics\n", "text/plain"
            else:
                status, kind = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                try:
                    body = (await self.collect()).encode()
                except TasktrailError as err:  # the database is busy or gone: say so
                    status, kind = "503 Service Unavailable", "text/plain"
                    body = f"tasktrail: {err}\n".encode()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
