"""Several worker processes share one PostgreSQL database: one is SIGKILLed mid-way, the
connections of another are terminated by the server; nothing acknowledged is lost, no task
is claimed twice, the raw checker finds nothing wrong.

``TASKTRAIL_PG_PROCESS_TASKS`` sets the number of tasks (CI: 120).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time

import asyncpg

from helpers import open_manager
from tasktrail import TaskState

from .checker import check

TASKS = int(os.environ.get("TASKTRAIL_PG_PROCESS_TASKS", "120"))

WORKER = """
import asyncio, random, sys
from tasktrail import TaskManager

async def main(url, worker_id):
    async def job(ctx):
        print("ran", ctx.task.id, ctx.attempt, worker_id, flush=True)
        # w0, the worker to be killed, is slow: it always has tasks in flight
        await asyncio.sleep(0.3 if worker_id == "w0" else random.random() * 0.05)
        return ctx.task.prompt

    async with TaskManager(url, poll_interval=0.02, worker_id=worker_id, lease_timeout=2.0,
                           max_running=8) as tm:
        tm.register("job", job)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # run until stdin closes

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Worker:
    """A TaskManager in its own OS process; collects the (task, attempt) pairs it ran."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.ran: list[tuple[str, int]] = []
        self.ready = asyncio.Event()
        self.reading = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, url: str, name: str) -> Worker:
        app_url = f"{url}&application_name={name}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, app_url, name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        worker = cls(name, proc)
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            await worker.ready.wait()
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            words = raw.decode().split()
            if words == ["ready"]:
                self.ready.set()
            elif words[:1] == ["ran"] and len(words) == 4:  # not a line cut by SIGKILL
                self.ran.append((words[1], int(words[2])))

    async def kill(self) -> None:
        """SIGKILL, and reap it so its pid is really gone."""
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self.reading

    async def stop(self) -> int:
        """Close its stdin and let it shut down cleanly."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            code = await self.proc.wait()
            await self.reading
        return code


async def terminate(raw: asyncpg.Connection, application: str) -> int:
    """pg_terminate_backend on every connection of one worker process."""
    return int(
        await raw.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            application,
        )
    )


async def test_workers_killed_and_disconnected_lose_nothing(pg_url: str) -> None:
    """SIGKILL one worker, terminate another's connections: every task completes, once."""
    raw = await asyncpg.connect(pg_url)
    try:
        async with open_manager(pg_url, run_tasks=False) as client:
            workers = [await Worker.start(pg_url, f"w{n}") for n in range(3)]
            try:
                launched = [
                    await client.launch("job", f"p{i}", max_attempts=5) for i in range(TASKS)
                ]
                deadline = time.monotonic() + 300  # generous: a loaded 2-core machine
                while sum(len(w.ran) for w in workers) < TASKS // 4 or not [
                    t for t in await client.list_tasks(state=TaskState.RUNNING)
                    if t.worker_id == "w0"
                ]:  # fmt: skip
                    assert time.monotonic() < deadline, "the workers never got going"
                    await asyncio.sleep(0.02)
                await workers[0].kill()  # with tasks running
                cut = 0
                for _ in range(3):
                    cut += await terminate(raw, "w1")
                    await asyncio.sleep(0.1)
                assert cut > 0
                pending = {t.id for t in launched}
                while pending:
                    assert time.monotonic() < deadline, f"{len(pending)} tasks never finished"
                    done = await client.store.get_tasks(list(pending))
                    pending -= {t.id for t in done if t.is_terminal}
                    await asyncio.sleep(0.05)
            finally:
                codes = [await w.stop() for w in workers[1:]]
                if workers[0].proc.returncode is None:
                    await workers[0].kill()
            assert codes == [0, 0]
            tasks = await client.store.get_tasks([t.id for t in launched])
            assert {t.state for t in tasks} == {TaskState.COMPLETED}
            assert all(t.result == t.prompt for t in tasks)
            assert await client.store.check_projection() == []
            assert (await client.verify()).events > 4 * TASKS
    finally:
        await raw.close()
    runs = collections.Counter(pair for w in workers for pair in w.ran)
    assert [pair for pair, times in runs.items() if times > 1] == []  # no double claim
    assert any(attempt > 1 for _, attempt in runs)  # the killed worker's tasks ran again
    report = await check(pg_url, acknowledged=[(t.id, 1) for t in launched])
    assert report.ok, report.details
