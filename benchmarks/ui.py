"""The dashboard (``tasktrail ui``) on a large log, and its live stream under load.

Run from the repository with the ``ui`` extra installed (the ``test`` extra includes it)::

    python benchmarks/ui.py            # 100,000 tasks (1M events); 20 clients, 1,000 tasks
    python benchmarks/ui.py --quick    # 10,000 tasks; 5 clients, 100 tasks: a smoke run
    python benchmarks/ui.py --json benchmarks/results/ui.json

pages
    A log of T finished tasks of 10 events each (created, claimed, started, 6 lines of
    output, completed), built once by ``history.py`` and kept in ``--cache``, plus a task of
    1,000 events (two attempts, a recovery, 990 lines of output) and a parent with 60
    children, appended through the store for the run and thrown away after it. Each page
    is served by the dashboard's own web app in this process, an ASGI call with no
    socket: its server time, from the request to the last byte of the page. Beside it,
    in the same run and on the same file, the raw SQL queries the page needs, run with
    stdlib ``sqlite3`` (rows fetched, not decoded, nothing rendered): the floor the
    database sets. Target: every page but the text search under 100 ms.
live
    ``tasktrail ui`` as a process, C clients following its live stream of the task list
    (server-sent events, each its own connection), while a worker process (a
    ``TaskManager`` with a no-op function runner, 64 at a time) runs N tasks launched
    beforehand. Measured: how long after a task's ``task.completed`` event was committed
    each client received the update showing it completed (every client must see every
    task), and the worker's throughput from its first claim to its last completion, both
    from the log. Baseline in the same run: the same worker on the same number of tasks
    with no dashboard and no client. Target: p99 delivery under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import history
from common import Comparison, Figure, environment
from tasktrail import (
    AsyncClient,
    NewEvent,
    OutputAppended,
    SQLiteEventStore,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskManager,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.ui import Dashboard, Settings, create_app
from tasktrail.ui._queries import Cursor

HERE = Path(__file__).resolve()
RICH = "rich-task"
PARENT = "parent-task"


@dataclass(frozen=True)
class Config:
    tasks: int
    clients: int
    live_tasks: int
    repeat: int
    cache: Path
    directory: str | None
    json_path: Path | None
    quick: bool


# -- pages: served in process, beside the raw queries ----------------------------------------


async def serve(app: Any, target: str) -> tuple[int, bytes, float]:
    """One GET through the ASGI app: (status, body, seconds until the last byte)."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": urllib.parse.unquote(path), "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8765")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8765),
    }  # fmt: skip
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    gc.collect()
    start = time.perf_counter()
    await app(scope, receive, send)
    return status, b"".join(body), time.perf_counter() - start


def raw_timed(db: sqlite3.Connection, queries: Sequence[tuple[str, Sequence[Any]]]) -> float:
    """Seconds to run ``queries`` and fetch every row."""
    gc.collect()
    start = time.perf_counter()
    for sql, params in queries:
        db.execute(sql, params).fetchall()
    return time.perf_counter() - start


LIST = (
    "SELECT record, created_at, rowid FROM tasks{where} "
    "ORDER BY created_at DESC, rowid DESC LIMIT 51"
)
COUNTS = [
    ("SELECT state, count(*) FROM tasks GROUP BY state", ()),
    ("SELECT agent, state, count(*) FROM tasks GROUP BY agent, state ORDER BY agent", ()),
]
HEAD = ("SELECT max(seq) FROM events", ())


def task_queries(task_id: str) -> list[tuple[str, Sequence[Any]]]:
    """What a task's page reads: the task (twice), its history, its children."""
    return [
        HEAD,
        ("SELECT record FROM tasks WHERE id = ?", (task_id,)),
        ("SELECT * FROM events WHERE stream_id = ? ORDER BY version", (task_id,)),
        ("SELECT record FROM tasks WHERE id = ?", (task_id,)),
        (
            "SELECT record FROM tasks WHERE parent_id = ? ORDER BY created_at, rowid LIMIT 51",
            (task_id,),
        ),
    ]


async def add_rich_tasks(path: Path) -> None:
    """A task of 1,000 events (two attempts, a recovery) and a parent of 60 children."""
    async with SQLiteEventStore(path, synchronous="OFF") as store:
        events = [
            TaskCreated(agent="bench", prompt="a long one", max_attempts=2),
            TaskClaimed(worker_id="w1", attempt=1), TaskStarted(),
            *(OutputAppended(text=f"line {n}\n") for n in range(400)),
            TaskRequeued(), TaskClaimed(worker_id="w2", attempt=2), TaskStarted(),
            *(OutputAppended(text=f"line {n}\n") for n in range(400, 990)),
            TaskCompleted(),
        ]  # fmt: skip
        reason = {len(events) - 593: "recovery: worker w1 is gone"}
        for start in range(0, len(events), 100):
            batch = [
                NewEvent(event, reason=reason.get(start + i))
                for i, event in enumerate(events[start : start + 100])
            ]
            await store.append(RICH, batch, expected_version=start)
        await store.append(PARENT, [NewEvent(TaskCreated(agent="bench"))], expected_version=0)
        await asyncio.gather(
            *(
                store.append(
                    f"child-{n}",
                    [NewEvent(TaskCreated(agent="bench", parent_id=PARENT))],
                    expected_version=0,
                )
                for n in range(60)
            )
        )


async def measure_pages(path: Path, config: Config, say: Callable[[str], None]) -> list[Comparison]:
    """Every page, served and raw, ``repeat`` times after a warm-up."""
    await add_rich_tasks(path)
    raw = sqlite3.connect(path)
    middle = raw.execute(
        "SELECT created_at, rowid FROM tasks ORDER BY created_at, rowid LIMIT 1 OFFSET ?",
        (config.tasks // 2,),
    ).fetchone()
    typical = raw.execute("SELECT id FROM tasks WHERE rowid = ?", (middle[1],)).fetchone()[0]
    cursor = Cursor(middle[0], middle[1]).encode()
    keyset = " WHERE created_at <= ? AND (created_at < ? OR rowid < ?)"
    needle = f"report {config.tasks // 3} "
    pages: list[tuple[str, str, list[tuple[str, Sequence[Any]]]]] = [
        ("task list, first page", "/", [HEAD, (LIST.format(where=""), ()), *COUNTS]),
        (
            f"task list, page {config.tasks // 100} (older than the middle task)",
            f"/?before={cursor}",
            [HEAD, (LIST.format(where=keyset), (middle[0], middle[0], middle[1])), *COUNTS],
        ),
        (
            "task list, completed only",
            "/?state=completed",
            [HEAD, (LIST.format(where=" WHERE state = ?"), ("completed",)), *COUNTS],
        ),
        (
            "task list, one agent",
            "/?agent=bench",
            [HEAD, (LIST.format(where=" WHERE agent = ?"), ("bench",)), *COUNTS],
        ),
        (
            "task list, text search (no index: a scan)",
            "/?q=" + urllib.parse.quote(needle),
            [HEAD, (LIST.format(where=" WHERE record LIKE ?"), (f"%{needle}%",)), *COUNTS],
        ),
        ("task page, 10 events", f"/tasks/{typical}", task_queries(typical)),
        ("task page, 1,000 events", f"/tasks/{RICH}", task_queries(RICH)),
        ("task page, 60 children", f"/tasks/{PARENT}", task_queries(PARENT)),
        (
            "workers and stats",
            "/workers",
            [
                HEAD, *COUNTS, ("SELECT * FROM workers ORDER BY started_at", ()),
                ("SELECT record FROM tasks WHERE state IN ('starting', 'running')", ()),
                (
                    "SELECT CAST((updated_at - ?) / 60 AS INTEGER), state, count(*) FROM tasks "
                    "INDEXED BY tasks_finished WHERE state IN ('completed', 'failed', "
                    "'cancelled') AND updated_at >= ? GROUP BY 1, 2",
                    (time.time() - 3600, time.time() - 3600),
                ),
            ],
        ),
    ]  # fmt: skip
    comparisons = []
    async with Dashboard(Settings(str(path))) as dash:
        app = create_app(dash)
        for label, target, queries in pages:
            status, body, _ = await serve(app, target)  # warm-up, and a check
            if status != 200 or b"<table" not in body:
                raise RuntimeError(f"{target} answered {status}: {body[:300]!r}")
            raw_timed(raw, queries)
            served: list[float] = []
            floor: list[float] = []
            for rep in range(config.repeat):
                if rep % 2:
                    floor.append(raw_timed(raw, queries))
                    served.append((await serve(app, target))[2])
                else:
                    served.append((await serve(app, target))[2])
                    floor.append(raw_timed(raw, queries))
            comparison = Comparison(
                f"page_{len(comparisons)}",
                label,
                Figure("served (ASGI, in process)", "ms", tuple(s * 1000 for s in served)),
                Figure("raw sqlite3 queries", "ms", tuple(s * 1000 for s in floor)),
            )
            say(f"{label}: {comparison.tasktrail.show()} (raw {comparison.baseline.show()})")
            comparisons.append(comparison)
    raw.close()
    return comparisons


# -- live: clients on the stream while a worker runs -----------------------------------------


async def child_worker(database: str) -> None:
    """A worker running no-op tasks until none is left."""

    async def noop(ctx: object) -> None:
        return None

    async with TaskManager(database, max_running=64, poll_interval=0.05, task_ttl=None) as tm:
        tm.register("bench", noop)
        while await tm.store.list_tasks(state=["pending", "starting", "running"], limit=1):
            await tm.store.wait_for_commit(0.05)


async def launch_all(database: str, count: int) -> None:
    async with AsyncClient(database) as client:
        for start in range(0, count, 500):
            chunk = range(start, min(start + 500, count))
            await asyncio.gather(*(client.launch("bench", f"task {n}") for n in chunk))


def log_times(database: str) -> tuple[float, dict[str, float]]:
    """(seconds from the first claim to the last completion, completion time per task)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        first = db.execute("SELECT min(recorded_at) FROM events WHERE type = 'task.claimed'")
        start = first.fetchone()[0]
        done = dict(
            db.execute("SELECT stream_id, recorded_at FROM events WHERE type = 'task.completed'")
        )
    return max(done.values()) - start, done


def run_worker(database: str) -> None:
    subprocess.run([sys.executable, str(HERE), "--child-worker", database], check=True, timeout=600)


async def follow(
    url: str, seen: dict[str, float], ready: asyncio.Event, done: asyncio.Event, expected: int
) -> None:
    """One client: read the list's stream; note when each task was first seen completed
    (``done`` once ``expected`` were)."""
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 24)
    writer.write(
        f"GET /stream?after=0 HTTP/1.0\r\nHost: {parts.netloc}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    name = ""
    try:
        while line := await reader.readline():
            text = line.decode().rstrip("\r\n")
            if text.startswith("event: "):
                name = text[7:]
            elif text.startswith("data: "):
                if name == "ready":
                    ready.set()
                elif name == "tasks":
                    now = time.time()
                    for row in json.loads(text[6:])["tasks"]:
                        if row["state"] == "completed":
                            seen.setdefault(row["id"], now)
                    if len(seen) >= expected:
                        done.set()
    finally:
        writer.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def start_ui(database: str) -> tuple[subprocess.Popen[bytes], str]:
    """``tasktrail ui`` on a free port: the process and its URL, once it listens."""
    out = Path(database + ".ui.out")
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasktrail", "ui", "--db", database, "--port", "0"],
            stdout=stdout, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (found := re.search(r" at (http://\S+/)\n", out.read_text())):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("tasktrail ui did not start")
        time.sleep(0.05)
    return process, found[1]


async def measure_live_once(directory: Path, config: Config, with_clients: bool) -> dict[str, Any]:
    database = str(directory / f"live-{with_clients}-{time.monotonic_ns()}.db")
    await launch_all(database, 0)  # create it
    process = None
    seen: list[dict[str, float]] = []
    followers: list[asyncio.Task[None]] = []
    dones: list[asyncio.Event] = []
    cpu = 0.0
    try:
        if with_clients:
            process, url = await asyncio.to_thread(start_ui, database)
            readies = []
            for _ in range(config.clients):
                seen.append({})
                readies.append(asyncio.Event())
                dones.append(asyncio.Event())
                followers.append(
                    asyncio.create_task(
                        follow(url, seen[-1], readies[-1], dones[-1], config.live_tasks)
                    )
                )
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        await launch_all(database, config.live_tasks)
        cpu_before = _cpu(process)
        await asyncio.to_thread(run_worker, database)
        worked, done = log_times(database)
        if with_clients:
            with contextlib.suppress(TimeoutError):  # a client that missed one: judged below
                await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 60)
            cpu = _cpu(process) - cpu_before
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        if process is not None:
            process.terminate()
            process.wait(30)
    result: dict[str, Any] = {"seconds": worked, "tasks_per_s": config.live_tasks / worked}
    if with_clients:
        delays = [when - done[task_id] for client in seen for task_id, when in client.items()]
        result.update(
            complete=all(len(client) == config.live_tasks for client in seen),
            deliveries=len(delays),
            p50=percentile(delays, 0.5),
            p99=percentile(delays, 0.99),
            max=max(delays),
            ui_cpu_seconds=cpu,
        )
    return result


def _cpu(process: subprocess.Popen[bytes] | None) -> float:
    """CPU seconds a child process has used (0 without one, or off Linux)."""
    if process is None:
        return 0.0
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_live(config: Config, say: Callable[[str], None]) -> list[Comparison]:
    directory = Path(tempfile.mkdtemp(prefix="tasktrail-ui-bench-", dir=config.directory))
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for rep in range(config.repeat):
        for with_clients in (True, False) if rep % 2 == 0 else (False, True):
            result = await measure_live_once(directory, config, with_clients)
            runs[with_clients].append(result)
            say(f"live, {'with' if with_clients else 'without'} the dashboard: {result}")
    watched, alone = runs[True], runs[False]
    if not all(r["complete"] for r in watched):
        raise RuntimeError("a client missed a completed task")
    n, c = config.live_tasks, config.clients
    baseline = Figure("the worker alone", "tasks/s", tuple(r["tasks_per_s"] for r in alone))
    return [
        Comparison(
            "live_throughput",
            f"worker throughput, {n:,} tasks, {c} live clients",
            Figure("with the dashboard", "tasks/s", tuple(r["tasks_per_s"] for r in watched)),
            baseline,
        ),
        *(
            Comparison(
                f"live_{key}",
                f"delivery to {c} clients, {key}",
                Figure("commit to client", "ms", tuple(r[key] * 1000 for r in watched)),
                Figure("target", "ms", (1000.0,)),
            )
            for key in ("p50", "p99", "max")
        ),
        Comparison(
            "live_cpu",
            f"dashboard CPU while {n:,} tasks ran",
            Figure("tasktrail ui process", "s", tuple(r["ui_cpu_seconds"] for r in watched)),
            Figure("the worker's run", "s", tuple(r["seconds"] for r in watched)),
        ),
    ]


# -- the run --------------------------------------------------------------------------------


def table(comparisons: Sequence[Comparison]) -> str:
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


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description="tasktrail ui: pages at scale, live clients.")
    parser.add_argument("--tasks", type=int, help="finished tasks in the log (default 100000)")
    parser.add_argument("--clients", type=int, help="live clients (default 20)")
    parser.add_argument("--live-tasks", type=int, help="tasks the worker runs (default 1000)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run with small sizes")
    parser.add_argument("--cache", type=Path, help="where the large log is built and kept")
    parser.add_argument("--dir", help="where the live runs' databases go")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    defaults = (10_000, 5, 100, 1) if args.quick else (100_000, 20, 1000, 5)
    config = Config(
        tasks=args.tasks or defaults[0],
        clients=args.clients or defaults[1],
        live_tasks=args.live_tasks or defaults[2],
        repeat=args.repeat or defaults[3],
        cache=args.cache or Path(tempfile.gettempdir(), "tasktrail-bench-cache"),
        directory=args.dir,
        json_path=args.json,
        quick=args.quick,
    )
    if min(config.tasks, config.clients, config.live_tasks, config.repeat) < 1:
        parser.error("sizes must be at least 1")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child-worker"]:
        asyncio.run(child_worker(sys.argv[2]))
        return 0
    config = parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    template, events, built = history.cached(
        config.cache, history=config.tasks * 10, live=0, outputs=6
    )
    say(f"log: {events:,} events in {template}" + (f" (built in {built:.0f} s)" if built else ""))
    with history.scratch(template, events=events, live=0):
        pages = asyncio.run(measure_pages(template, config, say))
    live = asyncio.run(measure_live(config, say))
    comparisons = pages + live
    print()
    print(table(comparisons))
    slow = [
        c.scenario for c in pages if "text search" not in c.scenario and c.tasktrail.median >= 100
    ]
    late = [c for c in live if c.key == "live_p99" and c.tasktrail.median >= 1000]
    if not config.quick:
        print(f"\npages under 100 ms: {'yes' if not slow else 'no: ' + ', '.join(slow)}")
        print(f"p99 delivery under 1 s: {'yes' if not late else 'no'}")
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(
            json.dumps(
                {
                    "settings": {k: str(v) for k, v in vars(config).items()},
                    "log_events": events,
                    "context": environment(str(config.directory) if config.directory else None),
                    "figures": [
                        {
                            "key": c.key,
                            "scenario": c.scenario,
                            "ratio": c.ratio,
                            "tasktrail": c.tasktrail.as_json(),
                            "baseline": c.baseline.as_json(),
                        }
                        for c in comparisons
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
