"""tasktrail on PostgreSQL beside procrastinate (a PostgreSQL task queue), in the same run
(scenario 8). Needs the ``[postgres,bench]`` extras and a server at ``--server`` (an admin
URL; default ``$TASKTRAIL_BENCH_POSTGRES``, else
``postgresql://postgres@127.0.0.1:5432/postgres``); when the server cannot be reached the
part is skipped with a note saying so.

Every measurement gets a fresh database (created and dropped around it, untimed) and is
run with 1, 2 and 4 OS processes (this file as a child process), started together behind
a barrier file, so neither interpreter start-up nor connecting is timed. The two systems
alternate which goes first on every other repetition.

append
    N tasks driven through their 4 events, one ``append`` per event with
    ``expected_version``, by C concurrent callers in each of P processes. Baseline:
    procrastinate's ``defer_async`` of 4N no-op jobs by C callers per process (one INSERT
    and one NOTIFY each).
lifecycle
    N tasks launched beforehand (untimed), run by P worker processes, each a
    ``TaskManager`` with a no-op function runner and ``max_running=C``; the clock stops
    when the parent (polling every 10 ms) sees every task completed. Baseline: N no-op
    jobs deferred beforehand, run by P procrastinate workers with ``concurrency=C``.
    Afterwards the log is counted: claims per task (exactly one each when no claim was
    lost or doubled), re-queues, and each worker reports the claim rounds that failed
    (its log's warnings), so a lost or conflicting claim shows up as a number.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from common import (
    AGENT,
    LAUNCH_CHUNK,
    POLL_INTERVAL,
    Comparison,
    Figure,
    Outcome,
    Row,
    Say,
    Settings,
    in_order,
)

HERE: Final = Path(__file__).resolve()
SYSTEMS: Final = ("tasktrail", "procrastinate")
DONE_POLL: Final = 0.01


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database``."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{database}"))


# -- the child processes -------------------------------------------------------------------


async def _wait_go(go: str) -> None:
    """Say ready, then wait for the parent's go file (a barrier across processes)."""
    print("ready", flush=True)
    while not await asyncio.to_thread(os.path.exists, go):  # noqa: ASYNC110 - another process
        await asyncio.sleep(0.001)


async def _until_stdin_closes() -> None:
    """Wait until the parent closes our stdin (read by the event loop: no thread)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        await reader.read()
    finally:
        transport.close()


class _Counter(logging.Handler):
    """Counts the records the library logs at WARNING and above, and the failed claims."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.warnings = 0
        self.claim_failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.warnings += 1
        if "claim" in message and ("failed" in message or "asking again" in message):
            self.claim_failures += 1


async def _child_tasktrail_append(url: str, go: str, name: str, tasks: int, callers: int) -> None:
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
                steps = (
                    TaskCreated(agent=AGENT),
                    TaskClaimed(worker_id=name, attempt=1),
                    TaskStarted(),
                    TaskCompleted(),
                )
                for version, payload in enumerate(steps):
                    await store.append(
                        f"{name}-{index}", [NewEvent(payload)], expected_version=version
                    )

        await _wait_go(go)
        await asyncio.gather(*(caller(lane) for lane in range(callers)))


def _procrastinate_app(url: str) -> tuple[Any, Any]:
    import procrastinate

    # it warns that an app defined in __main__ cannot be imported by its workers; these
    # workers are this very script, so the warning does not apply
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app, noop


async def _child_procrastinate_append(url: str, go: str, jobs: int, callers: int) -> None:
    app, noop = _procrastinate_app(url)
    async with app.open_async():

        async def caller(lane: int) -> None:
            for _ in range(lane, jobs, callers):
                await noop.defer_async()

        await _wait_go(go)
        await asyncio.gather(*(caller(lane) for lane in range(callers)))


async def _child_tasktrail_worker(url: str, go: str, name: str, callers: int) -> None:
    from common import noop
    from tasktrail import TaskManager

    counter = _Counter()
    logging.getLogger("tasktrail").addHandler(counter)
    logging.getLogger("tasktrail").setLevel(logging.INFO)
    manager = TaskManager(url, worker_id=name, max_running=callers, poll_interval=POLL_INTERVAL)
    async with manager as tm:
        await _wait_go(go)
        tm.register(AGENT, noop)
        await _until_stdin_closes()
    print(json.dumps({"warnings": counter.warnings, "claim_failures": counter.claim_failures}))


async def _child_procrastinate_worker(url: str, go: str, callers: int) -> None:
    app, _ = _procrastinate_app(url)
    async with app.open_async():
        await _wait_go(go)
        await app.run_worker_async(concurrency=callers, wait=False, install_signal_handlers=False)
        await _until_stdin_closes()


def child(argv: Sequence[str]) -> None:
    """The entry of a child process: ``ROLE URL GO ...``."""
    logging.getLogger("tasktrail").addHandler(logging.NullHandler())
    role, url, go, *rest = argv
    if role == "tasktrail-append":
        asyncio.run(_child_tasktrail_append(url, go, rest[0], int(rest[1]), int(rest[2])))
    elif role == "procrastinate-append":
        asyncio.run(_child_procrastinate_append(url, go, int(rest[0]), int(rest[1])))
    elif role == "tasktrail-worker":
        asyncio.run(_child_tasktrail_worker(url, go, rest[0], int(rest[1])))
    elif role == "procrastinate-worker":
        asyncio.run(_child_procrastinate_worker(url, go, int(rest[0])))
    else:
        raise SystemExit(f"unknown role {role}")


# -- the parent ------------------------------------------------------------------------------


class _Database:
    """A fresh database for one measurement, dropped afterwards."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"tasktrail_bench_{secrets.token_hex(4)}"
        self.url = with_database(server, self.name)

    async def __aenter__(self) -> _Database:
        import asyncpg

        conn = await asyncpg.connect(self.server, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.server, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _timed_children(
    argvs: list[list[str]],
    go: Path,
    done_sql: str | None,
    url: str,
    expected: int,
    *,
    before_go: Callable[[list[int]], Awaitable[object]] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """Start the children, release them together; return the seconds until they finished
    (or, with ``done_sql``, until it counts ``expected``) and what each printed last.
    ``before_go`` gets the children's pids once all are ready (a profiler attaches)."""
    import asyncpg

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
    reports: list[dict[str, Any]] = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line != b"ready\n":
                raise RuntimeError(f"a benchmark process failed to start: {line!r}")
        if before_go is not None:
            await before_go([proc.pid for proc in procs])
        poller = await asyncpg.connect(url) if done_sql else None
        began = time.perf_counter()
        await asyncio.to_thread(go.touch)
        if poller is not None and done_sql is not None:
            while int(await poller.fetchval(done_sql)) < expected:  # noqa: ASYNC110 - polls the db
                await asyncio.sleep(DONE_POLL)
            elapsed = time.perf_counter() - began
            await poller.close()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            assert proc.stdout is not None
            rest = (await proc.stdout.read()).decode().strip().splitlines()
            if await proc.wait() != 0:
                raise RuntimeError("a benchmark process failed")
            if rest and rest[-1].startswith("{"):
                reports.append(json.loads(rest[-1]))
        if done_sql is None:
            elapsed = time.perf_counter() - began
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return elapsed, reports


_CLAIMS: Final = (
    "SELECT count(*) FILTER (WHERE type = 'task.claimed'), "
    "count(DISTINCT stream_id) FILTER (WHERE type = 'task.claimed'), "
    "count(*) FILTER (WHERE type = 'task.requeued') FROM events"
)


async def _measure_one(
    s: Settings, system: str, kind: str, processes: int, go: Path
) -> tuple[float, dict[str, int]]:
    """Seconds for one measurement on a fresh database, and (tasktrail lifecycle) the
    claim counts."""
    import asyncpg

    n, c = s.pg_tasks, s.pg_callers
    share = max(1, n // processes)
    async with _Database(s.server) as db:
        url = db.url
        if system == "procrastinate":
            app, noop = _procrastinate_app(url)
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                if kind == "lifecycle":
                    for start in range(0, n, LAUNCH_CHUNK):
                        await noop.batch_defer_async(
                            *({} for _ in range(start, min(n, start + LAUNCH_CHUNK)))
                        )
        else:
            from tasktrail import AsyncClient

            async with AsyncClient(url) as client:
                if kind == "lifecycle":
                    for start in range(0, n, LAUNCH_CHUNK):
                        await asyncio.gather(
                            *(
                                client.launch(AGENT)
                                for _ in range(start, min(n, start + LAUNCH_CHUNK))
                            )
                        )
        if kind == "append":
            if system == "tasktrail":
                argvs = [["tasktrail-append", url, str(go), f"p{p}", str(share), str(c)]
                         for p in range(processes)]  # fmt: skip
            else:
                argvs = [["procrastinate-append", url, str(go), str(4 * share), str(c)]
                         for p in range(processes)]  # fmt: skip
            elapsed, _ = await _timed_children(argvs, go, None, url, 0)
            return elapsed, {}
        if system == "tasktrail":
            argvs = [["tasktrail-worker", url, str(go), f"w{p}", str(c)] for p in range(processes)]
            done = "SELECT count(*) FROM tasks WHERE state = 'completed'"
        else:
            argvs = [["procrastinate-worker", url, str(go), str(c)] for p in range(processes)]
            done = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        elapsed, reports = await _timed_children(argvs, go, done, url, n)
        if system != "tasktrail":
            return elapsed, {}
        conn = await asyncpg.connect(url)
        try:
            claims, claimed, requeued = await conn.fetchrow(_CLAIMS)
        finally:
            await conn.close()
        return elapsed, {
            "tasks": n,
            "claims": int(claims),
            "tasks_claimed": int(claimed),
            "requeued": int(requeued),
            "claim_failures": sum(r["claim_failures"] for r in reports),
            "warnings": sum(r["warnings"] for r in reports),
        }


TICKS: Final = "(samples)"
"""The key of :func:`_sample_activity`'s counter that counts its looks."""
_ACTIVITY: Final = (
    "SELECT state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity "
    "WHERE datname = $1 AND pid <> pg_backend_pid()"
)


async def _sample_activity(url: str, database: str, samples: Counter[str]) -> None:
    """Every 10 ms, what each backend of ``database`` is doing (until cancelled)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        while True:
            for state, kind, event, query in await conn.fetch(_ACTIVITY, database):
                if state == "idle":
                    what = "idle (no transaction)"
                elif state == "idle in transaction":
                    what = "idle in transaction: the server waits for the client"
                elif kind:
                    what = f"{state}, waiting on {kind}:{event}"
                else:
                    what = f"{state}, running: {' '.join(query.split())[:40]}"
                samples[what] += 1
            samples[TICKS] += 1
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def profile_lifecycle(
    s: Settings, processes: int, before_go: Callable[[list[int]], Awaitable[object]]
) -> tuple[float, Counter[str]]:
    """The lifecycle run of ``processes`` tasktrail workers on a fresh database, for a
    profiler attached by ``before_go``; returns its seconds and what the server's backends
    were doing, sampled every 10 ms (``pg_stat_activity``)."""
    with tempfile.TemporaryDirectory(prefix="tasktrail-pg-") as tmp:
        go = Path(tmp, "go")
        async with _Database(s.server) as db:
            from tasktrail import AsyncClient

            async with AsyncClient(db.url) as client:
                for start in range(0, s.pg_tasks, LAUNCH_CHUNK):
                    chunk = range(start, min(s.pg_tasks, start + LAUNCH_CHUNK))
                    await asyncio.gather(*(client.launch(AGENT) for _ in chunk))
            argvs = [
                ["tasktrail-worker", db.url, str(go), f"w{p}", str(s.pg_callers)]
                for p in range(processes)
            ]
            done = "SELECT count(*) FROM tasks WHERE state = 'completed'"
            activity: Counter[str] = Counter()

            async def release(pids: list[int]) -> None:
                await before_go(pids)
                tasks.append(asyncio.create_task(_sample_activity(db.url, db.name, activity)))

            tasks: list[asyncio.Task[None]] = []
            try:
                elapsed, _ = await _timed_children(
                    argvs, go, done, db.url, s.pg_tasks, before_go=release
                )
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed, activity


def reachable(server: str) -> str | None:
    """Why the PostgreSQL part cannot run (``None``: it can)."""
    return asyncio.run(_reachable(server))


async def _reachable(server: str) -> str | None:
    """Why the part cannot run (``None``: it can)."""
    try:
        import asyncpg
        import procrastinate  # noqa: F401 - only checks that it is installed
    except ImportError as err:
        return f"{err.name} is not installed (pip install -e '.[postgres,bench]')"
    try:
        conn = await asyncpg.connect(server, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
        return f"PostgreSQL is not reachable at {server} ({type(err).__name__}: {err})"
    await conn.close()
    return None


async def _measure(s: Settings, say: Say, out: Outcome) -> None:
    samples: dict[str, list[float]] = {}
    claims: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tasktrail-pg-") as tmp:
        for kind in ("append", "lifecycle"):
            for processes in s.pg_processes:
                for rep in range(s.repeat):
                    for system in in_order(rep, SYSTEMS):
                        go = Path(tmp) / f"go-{kind}-{processes}-{rep}-{system}"
                        seconds, counted = await _measure_one(s, system, kind, processes, go)
                        share = max(1, s.pg_tasks // processes) * processes
                        amount = 4 * share if kind == "append" else share
                        key = f"{system}_{kind}_{processes}"
                        samples.setdefault(key, []).append(amount / seconds)
                        unit = "events/s" if kind == "append" else "tasks/s"
                        text = f"{amount / seconds:>8,.0f} {unit}"
                        if counted:
                            claims.append({"processes": processes, **counted})
                            text += (
                                f" ({counted['claims']:,} claims for {counted['tasks']:,} tasks, "
                                f"{counted['requeued']} re-queued, {counted['claim_failures']} "
                                f"failed claim rounds)"
                            )
                        say(f"{rep + 1}/{s.repeat} {kind:<9} {processes} process(es) "
                            f"{system:<13} {text}")  # fmt: skip
    out.data = {"rates": samples, "claims": claims}
    for kind in ("append", "lifecycle"):
        unit, baseline_unit = (
            ("events/s", "jobs deferred/s") if kind == "append" else ("tasks/s", "jobs/s")
        )
        for processes in s.pg_processes:
            c = Comparison(
                f"pg_{kind}_{processes}",
                f"PostgreSQL {kind}, {processes} process{'es' if processes > 1 else ''}"
                f" x {s.pg_callers} {'callers' if kind == 'append' else 'slots'}, {unit}",
                Figure("tasktrail", unit, tuple(samples[f"tasktrail_{kind}_{processes}"])),
                Figure(
                    "procrastinate",
                    baseline_unit,
                    tuple(samples[f"procrastinate_{kind}_{processes}"]),
                ),
            )
            if kind == "append":
                out.rows.append(Row(8, c))
            else:
                out.rows.append(Row(8, c, ">= 2 x procrastinate", c.ratio >= 2.0))
    few, many = min(s.pg_processes), max(s.pg_processes)
    c = Comparison(
        "pg_lifecycle_scaling",
        f"PostgreSQL lifecycle, {many} worker processes over {few}, tasks/s",
        Figure(f"{many} processes", "tasks/s", tuple(samples[f"tasktrail_lifecycle_{many}"])),
        Figure(f"{few} process", "tasks/s", tuple(samples[f"tasktrail_lifecycle_{few}"])),
    )
    out.rows.append(Row(8, c, f">= with {few}", c.ratio >= 1.0))
    for processes in s.pg_processes:
        mine = [r for r in claims if r["processes"] == processes]
        c = Comparison(
            f"pg_claims_{processes}",
            f"PostgreSQL lifecycle, {processes} process(es): claims recorded per task claimed",
            Figure("task.claimed events", "claims", tuple(r["claims"] for r in mine)),
            Figure("tasks", "claims", tuple(r["tasks"] for r in mine)),
        )
        lost = sum(r["claim_failures"] + r["requeued"] for r in mine)
        exact = all(r["claims"] == r["tasks"] == r["tasks_claimed"] for r in mine)
        out.rows.append(
            Row(8, c, "= 1: every task claimed once, no claim lost", exact and lost == 0)
        )


def part_postgres(s: Settings, say: Say) -> Outcome:
    """Scenario 8: append and lifecycle on PostgreSQL beside procrastinate, by process
    count; claims counted. Skipped, with a note, when the server is unreachable."""
    out = Outcome()
    why = reachable(s.server)
    if why is not None:
        note = f"PostgreSQL part skipped: {why}"
        say(note)
        out.notes.append(note)
        return out
    asyncio.run(_measure(s, say, out))
    return out


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"]:
        raise SystemExit("a part of the suite: run python benchmarks/run.py --only postgres")
    child(sys.argv[2:])
