"""TaskManager on each backend: what a runner writes, read back by get_output."""

from __future__ import annotations

import asyncio

import pytest
from runtime_helpers import Gate, payloads

from helpers import finished
from helpers import open_manager as manager
from tasktrail import OutputAppended, RunContext, TaskState, WaitTimeoutError
from tasktrail.testing import FakeClock


async def test_get_output_returns_written_text(db_path: str) -> None:
    """get_output returns everything the runner wrote, in order."""

    async def chatty(ctx: RunContext) -> None:
        await ctx.write("one\n")
        await ctx.write("two\n", channel="stderr")
        await ctx.write("three\n")

    async with manager(db_path) as tm:
        tm.register("chatty", chatty)
        task = await tm.launch("chatty")
        await finished(tm, task.id)
        assert await tm.get_output(task.id) == "one\ntwo\nthree\n"


async def test_get_output_with_wait_returns_after_the_task_finished(db_path: str) -> None:
    """get_output(wait=True) waits for the task and returns its whole output."""
    gate = Gate()

    async def chatty(ctx: RunContext) -> None:
        await ctx.write("before\n")
        await gate(ctx)
        await ctx.write("after\n")

    async with manager(db_path) as tm:
        tm.register("chatty", chatty)
        task = await tm.launch("chatty")
        reader = asyncio.create_task(tm.get_output(task.id, wait=True))
        await gate.entered[task.id].wait()
        assert not reader.done()
        gate.release[task.id].set()
        assert await reader == "before\nafter\n"
        assert (await tm.get_task(task.id)).state is TaskState.COMPLETED  # type: ignore[union-attr]


async def test_get_output_wait_timeout_raises(db_path: str) -> None:
    """get_output(wait=True, timeout=0) on a live task raises WaitTimeoutError."""
    async with manager(db_path) as tm:
        task = await tm.launch("nobody-runs-this")
        with pytest.raises(WaitTimeoutError):
            await tm.get_output(task.id, wait=True, timeout=0)


async def test_many_small_writes_are_coalesced(db_path: str) -> None:
    """A thousand small writes become far fewer output events, with every byte kept."""
    clock = FakeClock()

    async def chatty(ctx: RunContext) -> None:
        for i in range(1000):
            await ctx.write(f"line {i}\n")

    async with manager(db_path, clock=clock) as tm:
        tm.register("chatty", chatty)
        task = await tm.launch("chatty")
        await finished(tm, task.id)
        outputs = [p for p in await payloads(tm, task.id) if isinstance(p, OutputAppended)]
        assert 1 <= len(outputs) <= 10
        assert "".join(p.text for p in outputs) == "".join(f"line {i}\n" for i in range(1000))


async def test_buffered_output_is_written_when_the_runner_fails(db_path: str) -> None:
    """Output buffered before a runner raises is still in the log."""

    async def chatty_failure(ctx: RunContext) -> None:
        await ctx.write("last words\n")
        raise RuntimeError("crash")

    async with manager(db_path) as tm:
        tm.register("chatty", chatty_failure)
        task = await tm.launch("chatty")
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert await tm.get_output(task.id) == "last words\n"
