"""tasktrail on PostgreSQL beside procrastinate (a PostgreSQL task queue), in the same run.

Run from the repository with the ``[postgres,bench]`` extras installed and a PostgreSQL
server reachable at ``--server`` (an admin URL; default ``$TASKTRAIL_BENCH_POSTGRES``, else
``postgresql://postgres@127.0.0.1:5432/postgres``)::

    python benchmarks/postgres.py            # 2,000 tasks, 16 callers per process
    python benchmarks/postgres.py --quick    # 100 tasks, 1 and 4 processes: a smoke run

Every measurement gets a fresh database (created and dropped around it, untimed) and is
run with 1, 2 and 4 OS processes, started together behind a barrier so that neither
interpreter start-up nor connecting is timed.

append
    ``N`` tasks driven through their 4 events, one ``append`` per event with
    ``expected_version`` (4N durable commits requested, batched by group commit), by C
    concurrent callers in each process. Baseline: procrastinate's ``defer_async`` of 4N
    no-op jobs by C concurrent callers per process (one INSERT and one NOTIFY each).
lifecycle
    ``N`` tasks launched beforehand (untimed) and run by P worker processes, each a
    ``TaskManager`` with a no-op function runner and ``max_running=C``; the clock stops
    when the parent sees every task completed. Baseline: N no-op jobs deferred
    beforehand, run by P procrastinate workers with ``concurrency=C``, until the parent
    sees every job succeeded. Both parents poll the database every 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from core import Comparison, Figure, markdown_table

DEFAULT_SERVER = os.environ.get(
    "TASKTRAIL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
HERE = Path(__file__).resolve()


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database``."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{database}"))


# -- the child processes -------------------------------------------------------------------


async def wait_go(go: str) -> None:
    """Say ready, then wait for the parent's go file (a barrier across processes)."""
    print("ready", flush=True)
    while not await asyncio.to_thread(os.path.exists, go):  # noqa: ASYNC110 - another process
        await asyncio.sleep(0.001)


async def child_tasktrail_append(url: str, go: str, name: str, tasks: int, callers: int) -> None:
    from tasktrail import (
        NewEvent,
        PostgresEventStore,
        TaskClaimed,
        TaskCompleted,
        TaskCreated,
        TaskStarted,
    )

    async with PostgresEventStore(url) as store:

        async def caller(lane: int) -> None:
            for index in range(lane, tasks, callers):
                task_id = f"{name}-{index}"
                steps = (
                    TaskCreated(agent="bench"),
                    TaskClaimed(worker_id=name, attempt=1),
                    TaskStarted(),
                    TaskCompleted(),
                )
                for version, payload in enumerate(steps):
                    await store.append(task_id, [NewEvent(payload)], expected_version=version)

        await wait_go(go)
        await asyncio.gather(*(caller(lane) for lane in range(callers)))


def procrastinate_app(url: str):  # type: ignore[no-untyped-def]
    import procrastinate

    # it warns that an app defined in __main__ cannot be imported by its workers; these
    # workers are this very script, so the warning does not apply
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app, noop


async def child_procrastinate_append(url: str, go: str, jobs: int, callers: int) -> None:
    app, noop = procrastinate_app(url)
    async with app.open_async():

        async def caller(lane: int) -> None:
            for _ in range(lane, jobs, callers):
                await noop.defer_async()

        await wait_go(go)
        await asyncio.gather(*(caller(lane) for lane in range(callers)))


async def child_tasktrail_worker(url: str, go: str, name: str, callers: int) -> None:
    from tasktrail import TaskManager

    async def noop(ctx: object) -> None:
        return None

    async with TaskManager(url, worker_id=name, max_running=callers, poll_interval=0.05) as tm:
        await wait_go(go)
        tm.register("bench", noop)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes stdin


async def child_procrastinate_worker(url: str, go: str, callers: int) -> None:
    app, _ = procrastinate_app(url)
    async with app.open_async():
        await wait_go(go)
        await app.run_worker_async(concurrency=callers, wait=False, install_signal_handlers=False)
        await asyncio.to_thread(sys.stdin.read)


def child(argv: Sequence[str]) -> None:
    role, url, go, *rest = argv
    if role == "tasktrail-append":
        asyncio.run(child_tasktrail_append(url, go, rest[0], int(rest[1]), int(rest[2])))
    elif role == "procrastinate-append":
        asyncio.run(child_procrastinate_append(url, go, int(rest[0]), int(rest[1])))
    elif role == "tasktrail-worker":
        asyncio.run(child_tasktrail_worker(url, go, rest[0], int(rest[1])))
    elif role == "procrastinate-worker":
        asyncio.run(child_procrastinate_worker(url, go, int(rest[0])))
    else:
        raise SystemExit(f"unknown role {role}")


# -- the parent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    server: str
    tasks: int
    callers: int
    processes: tuple[int, ...]
    repeat: int
    json_path: Path | None


class Database:
    """A fresh database for one measurement, dropped afterwards."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"tasktrail_bench_{secrets.token_hex(4)}"
        self.url = with_database(server, self.name)

    async def __aenter__(self) -> Database:
        conn = await asyncpg.connect(self.server)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        conn = await asyncpg.connect(self.server)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def count(self, sql: str) -> int:
        conn = await asyncpg.connect(self.url)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()


async def timed_children(
    argvs: list[list[str]], go: Path, done_sql: str | None, url: str, expected: int
) -> float:
    """Start the children, release them together, return the seconds until they finished
    (or, with ``done_sql``, until it counts ``expected``)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE),
            "--child",
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line != b"ready\n":
                raise RuntimeError(f"a benchmark process failed to start: {line!r}")
        poller = await asyncpg.connect(url) if done_sql else None
        began = time.perf_counter()
        await asyncio.to_thread(go.touch)
        if poller is not None and done_sql is not None:
            while int(await poller.fetchval(done_sql)) < expected:  # noqa: ASYNC110 - polls the db
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - began
            await poller.close()
        else:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.close()
                if await proc.wait() != 0:
                    raise RuntimeError("a benchmark process failed")
            elapsed = time.perf_counter() - began
    finally:
        for proc in procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        for proc in procs:
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return elapsed


async def measure_one(config: Config, system: str, kind: str, processes: int, go: Path) -> float:
    """Seconds for one measurement on a fresh database."""
    n, c = config.tasks, config.callers
    share = max(1, n // processes)
    async with Database(config.server) as db:
        url = db.url
        if system == "procrastinate":
            app, noop = procrastinate_app(url)
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                if kind == "lifecycle":
                    for start in range(0, n, 500):
                        await noop.batch_defer_async(
                            *({} for _ in range(start, min(n, start + 500)))
                        )
        else:
            from tasktrail import TaskManager

            async with TaskManager(url, run_tasks=False) as client:
                if kind == "lifecycle":
                    await asyncio.gather(*(client.launch("bench") for _ in range(n)))
        if kind == "append":
            if system == "tasktrail":
                argvs = [["tasktrail-append", url, str(go), f"p{p}", str(share), str(c)]
                         for p in range(processes)]  # fmt: skip
            else:
                argvs = [["procrastinate-append", url, str(go), str(4 * share), str(c)]
                         for p in range(processes)]  # fmt: skip
            return await timed_children(argvs, go, None, url, 0)
        if system == "tasktrail":
            argvs = [["tasktrail-worker", url, str(go), f"w{p}", str(c)] for p in range(processes)]
            done = "SELECT count(*) FROM tasks WHERE state = 'completed'"
        else:
            argvs = [["procrastinate-worker", url, str(go), str(c)] for p in range(processes)]
            done = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        return await timed_children(argvs, go, done, url, n)


async def measure(config: Config) -> list[Comparison]:
    comparisons = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("append", "lifecycle"):
            for processes in config.processes:
                samples: dict[str, list[float]] = {"tasktrail": [], "procrastinate": []}
                for rep in range(config.repeat):
                    order = ["tasktrail", "procrastinate"]
                    if rep % 2:
                        order.reverse()
                    for system in order:
                        go = Path(tmp) / f"go-{kind}-{processes}-{rep}-{system}"
                        seconds = await measure_one(config, system, kind, processes, go)
                        share = max(1, config.tasks // processes) * processes
                        samples[system].append((4 * share if kind == "append" else share) / seconds)
                unit = "events/s" if kind == "append" else "tasks/s"
                baseline_unit = "jobs deferred/s" if kind == "append" else "jobs/s"
                scenario = f"{kind}, {processes} process{'es' if processes > 1 else ''}"
                comparison = Comparison(
                    key=f"{kind}-{processes}",
                    scenario=scenario,
                    tasktrail=Figure("tasktrail", unit, tuple(samples["tasktrail"])),
                    baseline=Figure(
                        "procrastinate", baseline_unit, tuple(samples["procrastinate"])
                    ),
                )
                print(
                    f"{scenario:<24} tasktrail {comparison.tasktrail.show():>28}   "
                    f"procrastinate {comparison.baseline.show():>32}   "
                    f"ratio {comparison.ratio:.2f}",
                    flush=True,
                )
                comparisons.append(comparison)
    return comparisons


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the server")
    parser.add_argument("--tasks", type=int, help="tasks (and jobs) per measurement")
    parser.add_argument("--callers", type=int, help="concurrent callers / slots per process")
    parser.add_argument("--processes", help="process counts, comma separated [1,2,4]")
    parser.add_argument("--repeat", type=int, help="repetitions of every measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    return Config(
        server=args.server,
        tasks=args.tasks or (100 if args.quick else 2000),
        callers=args.callers or (8 if args.quick else 16),
        processes=tuple(
            int(p) for p in (args.processes or ("1,4" if args.quick else "1,2,4")).split(",")
        ),
        repeat=args.repeat or (1 if args.quick else 3),
        json_path=args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return 0
    config = parse_args(argv)
    print(
        f"tasktrail on PostgreSQL vs procrastinate: {config.tasks} tasks, {config.callers} "
        f"callers per process, processes {config.processes}, {config.repeat} repetition(s), "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    comparisons = asyncio.run(measure(config))
    print()
    print(markdown_table(comparisons))
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(
            json.dumps(
                [
                    {
                        "key": c.key,
                        "scenario": c.scenario,
                        "tasktrail": c.tasktrail.as_json(),
                        "baseline": c.baseline.as_json(),
                        "ratio": c.ratio,
                    }
                    for c in comparisons
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
