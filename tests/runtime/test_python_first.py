"""Python-first: a registry of runners, the blocking Client, serve(), input and run-later."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    Client,
    EventLoopError,
    InvalidInputError,
    Registry,
    RunContext,
    TaskCreated,
    TaskManager,
    TaskState,
    TasktrailError,
    WaitTimeoutError,
)

tasks = Registry()


@tasks.agent("double")
async def double(ctx: RunContext) -> Any:
    await ctx.write(f"doubling {ctx.input['n']}\n")
    return {"n": ctx.input["n"] * 2}


@tasks.agent()
def shout(ctx: RunContext) -> str:
    return ctx.task.prompt.upper()


def test_a_registry_collects_runners_at_import_time() -> None:
    """@registry.agent(name) registers under the name, @registry.agent() under the function's."""
    assert sorted(tasks) == ["double", "shout"]
    assert "double" in tasks and len(tasks) == 2
    with pytest.raises(InvalidInputError, match="twice"):
        tasks.register("double", double)
    with pytest.raises(InvalidInputError, match="runner"):
        Registry().register("x", "not a function")  # type: ignore[arg-type]


async def test_a_manager_includes_a_registry(db_path: str) -> None:
    """tm.include(registry) serves its agents; input reaches ctx.input, plain defs run too."""
    async with manager(db_path) as tm:
        tm.include(tasks)
        a = await tm.launch("double", input={"n": 21})
        b = await tm.launch("shout", "hello")
        assert (await finished(tm, a.id)).result == {"n": 42}
        assert (await finished(tm, b.id)).result == "HELLO"
        assert await tm.get_output(a.id) == "doubling 21\n"
        created = (await tm.history(a.id))[0].payload
        assert isinstance(created, TaskCreated) and created.input == {"n": 21}


@pytest.fixture
def worker(db_path: str) -> Iterator[None]:
    """A worker serving the registry, in a thread of its own with its own event loop."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        async with TaskManager(db_path, poll_interval=0.05) as tm:
            tm.include(tasks)
            stop.append(asyncio.Event())
            loop_box.append(asyncio.get_running_loop())
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield
    loop_box[0].call_soon_threadsafe(stop[0].set)
    thread.join(30)
    assert not thread.is_alive()


def test_the_blocking_client_from_several_threads(db_path: str, worker: None) -> None:
    """Client calls block, need no event loop, and are safe from many threads at once."""
    with Client(db_path, poll_interval=0.05) as client:

        def one(n: int) -> Any:
            task = client.launch("double", input={"n": n})
            done = client.wait(task.id, timeout=30)
            assert done.state is TaskState.COMPLETED
            assert client.get_task(task.id) == done
            assert client.get_output(task.id) == f"doubling {n}\n"
            assert [e.type for e in client.history(task.id)][-1] == "task.completed"
            return done.result["n"]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(24)))
        assert results == [2 * n for n in range(24)]
        assert len(client.list_tasks(agent="double")) == 24
        assert client.run("shout", "via run", timeout=30) == "VIA RUN"


def test_the_blocking_client_raises_the_async_apis_errors(tmp_path: Path) -> None:
    """The same typed errors as the async API; a wait times out as a TimeoutError."""
    with Client(tmp_path / "t.db") as client:
        assert client.get_task("nope") is None
        with pytest.raises(LookupError):
            client.cancel("nope")
        task = client.launch("nobody-serves-this")
        with pytest.raises(WaitTimeoutError) as raised:
            client.wait(task.id, timeout=0.05)
        assert isinstance(raised.value, TimeoutError)
        cancelled = client.cancel(task.id, reason="not needed")
        assert cancelled.state is TaskState.CANCELLED
    with pytest.raises(TasktrailError, match="closed"):
        client.get_task(task.id)


async def test_the_blocking_client_refuses_a_running_event_loop(tmp_path: Path) -> None:
    """Called inside a running event loop, a Client call raises and says to use the async API."""
    client = await asyncio.to_thread(Client, tmp_path / "t.db")
    try:
        with pytest.raises(EventLoopError, match="AsyncClient") as raised:
            client.launch("agent")
        assert isinstance(raised.value, RuntimeError)
    finally:
        await asyncio.to_thread(client.close)


async def test_serve_runs_until_cancelled(tmp_path: Path) -> None:
    """serve() runs tasks until its caller cancels it; the manager then closes cleanly."""
    async with manager(tmp_path / "t.db") as tm:
        tm.include(tasks)
        serving = asyncio.create_task(tm.serve())
        task = await tm.launch("shout", "served")
        assert (await finished(tm, task.id)).result == "SERVED"
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


async def test_serve_stops_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM ends serve(), which returns normally (the caller then closes the manager)."""
    async with manager(tmp_path / "t.db") as tm:
        serving = asyncio.create_task(tm.serve())
        await asyncio.sleep(0)  # serve() has installed its handlers
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await serving


async def test_run_later_with_a_real_clock(tmp_path: Path) -> None:
    """A task launched with not_before starts only once that time came."""
    async with manager(tmp_path / "t.db") as tm:
        tm.include(tasks)
        task = await tm.launch("shout", "later", not_before=0.3)
        done = await finished(tm, task.id)
        assert done.started_at is not None
        assert done.started_at.timestamp() >= task.not_before  # type: ignore[operator]
