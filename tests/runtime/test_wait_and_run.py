"""TaskManager on each backend: wait() for a task's end, and run() (launch, then wait)."""

from __future__ import annotations

import asyncio

import pytest
from runtime_helpers import Gate, echo, eventually, fail

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    StoreClosedError,
    TaskCancelledError,
    TaskFailedError,
    TaskState,
    TasktrailError,
    WaitTimeoutError,
)
from tasktrail.testing import FakeClock

# -- waiting -----------------------------------------------------------------------------------


async def test_wait_returns_the_terminal_task(db_path: str) -> None:
    """wait returns the task once it completed, with its result."""
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        task = await tm.launch("echo", "hello")
        done = await finished(tm, task.id)
        assert done.state is TaskState.COMPLETED
        assert done.result == "hello"
        assert done.finished_at is not None
        assert done == await tm.get_task(task.id)


async def test_many_concurrent_waiters_all_wake(db_path: str) -> None:
    """Twenty callers waiting for one task all receive the same completed task."""
    gate = Gate(result=42)
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        waiters = [asyncio.create_task(tm.wait(task.id)) for _ in range(20)]
        await gate.entered[task.id].wait()
        gate.release[task.id].set()
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            results = await asyncio.gather(*waiters)
        assert {(t.state, t.result, t.version) for t in results} == {
            (TaskState.COMPLETED, 42, results[0].version)
        }


async def test_waiter_on_cancelled_task_wakes_with_it(db_path: str) -> None:
    """A waiter on a task that gets cancelled returns the cancelled task, no error."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        waiter = asyncio.create_task(tm.wait(task.id))
        await gate.entered[task.id].wait()
        await tm.cancel(task.id)
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            done = await waiter
        assert done.state is TaskState.CANCELLED


async def test_wait_timeout_raises_wait_timeout_error(db_path: str) -> None:
    """wait past its timeout raises WaitTimeoutError, also a TimeoutError and TasktrailError."""
    clock = FakeClock()
    async with manager(db_path, clock=clock) as tm:
        task = await tm.launch("nobody-runs-this")
        waiter = asyncio.create_task(tm.wait(task.id, timeout=5))
        while not waiter.done():
            await clock.advance(1)
            await asyncio.wait([waiter], timeout=0.01)
        with pytest.raises(WaitTimeoutError) as caught:
            await waiter
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, TasktrailError)
        assert (caught.value.task_id, caught.value.timeout) == (task.id, 5)
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_waiter_is_answered_when_the_manager_closes(db_path: str) -> None:
    """A wait() still waiting when its manager closes raises StoreClosedError, never hangs."""
    async with manager(db_path) as tm:
        task = await tm.launch("nobody-runs-this")
        waiter = asyncio.create_task(tm.wait(task.id))
        for _ in range(3):  # reads are answered in order: the waiter's come first
            await tm.get_task(task.id)
        assert not waiter.done()
    with pytest.raises(StoreClosedError):
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await waiter


async def test_wait_with_zero_timeout_on_live_task_raises_at_once(db_path: str) -> None:
    """wait(timeout=0) on a live task raises WaitTimeoutError without waiting."""
    async with manager(db_path) as tm:
        task = await tm.launch("nobody-runs-this")
        with pytest.raises(WaitTimeoutError):
            await tm.wait(task.id, timeout=0)


# -- run ---------------------------------------------------------------------------------------


async def test_run_returns_the_result(db_path: str) -> None:
    """run launches, waits and returns the runner's result."""
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        assert await tm.run("echo", "hi there") == "hi there"


async def test_run_raises_task_failed_with_runner_error(db_path: str) -> None:
    """run of a failing runner raises TaskFailedError carrying the runner's error text."""
    async with manager(db_path) as tm:
        tm.register("bad", fail)
        with pytest.raises(TaskFailedError) as caught:
            await tm.run("bad", "the prompt")
        assert isinstance(caught.value, TasktrailError)
        assert caught.value.error is not None
        assert "boom in the prompt" in caught.value.error
        assert "ValueError" in caught.value.error
        assert "boom in the prompt" in str(caught.value)


async def test_run_raises_task_cancelled_when_cancelled(db_path: str) -> None:
    """run of a task cancelled meanwhile raises TaskCancelledError."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        running = asyncio.create_task(tm.run("slow"))
        await eventually(lambda: bool(gate.order), tm)
        await tm.cancel_all()
        with pytest.raises(TaskCancelledError) as caught:
            await running
        assert isinstance(caught.value, TasktrailError)
        assert caught.value.task_id == gate.order[0]


async def test_run_timeout_raises_wait_timeout_error(db_path: str) -> None:
    """run with a timeout that runs out raises WaitTimeoutError (a TimeoutError)."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock) as tm:
        tm.register("slow", gate)
        running = asyncio.create_task(tm.run("slow", timeout=5))
        await eventually(lambda: bool(gate.order), tm)
        while not running.done():
            await clock.advance(1)
            await asyncio.wait([running], timeout=0.01)
        with pytest.raises(WaitTimeoutError) as caught:
            await running
        assert isinstance(caught.value, TimeoutError)
