"""TaskManager on each backend: close() re-queues running attempts, and a new manager on
the same database runs what was left."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_helpers import Gate, echo

from helpers import closed, finished
from helpers import open_manager as manager
from tasktrail import TaskState


async def test_close_requeues_running_attempts(db_path: str) -> None:
    """close() stops running attempts and re-queues them, never leaving one running."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
    assert task.id in gate.cancelled
    async with manager(db_path, run_tasks=False) as reader:
        after = await reader.get_task(task.id)
        assert after is not None
        assert after.state is TaskState.PENDING
        assert after.reason
        assert await reader.list_tasks(TaskState.RUNNING) == []
        assert await reader.list_tasks(TaskState.STARTING) == []


async def test_close_during_a_claim_never_leaves_the_task_running(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while a claim is being committed never leaves the task starting or running."""
    submitted = asyncio.Event()
    async with manager(db_path) as tm:
        real_claim = tm.store.claim

        async def claim(request: Any) -> Any:
            queued = asyncio.ensure_future(real_claim(request))
            await asyncio.sleep(0)  # the claim is now queued for the next commit
            submitted.set()
            return await queued

        monkeypatch.setattr(tm.store, "claim", claim)
        tm.register("echo", echo)
        task = await tm.launch("echo")
        await submitted.wait()
    async with manager(db_path, run_tasks=False) as reader:
        after = await reader.get_task(task.id)
        assert after is not None
        # re-queued by close(), or run to its end before close() began; never left live
        assert after.state in (TaskState.PENDING, TaskState.COMPLETED)
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        assert (await finished(tm, task.id)).state is TaskState.COMPLETED


async def test_new_manager_runs_requeued_tasks(db_path: str) -> None:
    """A task re-queued by close() runs to completion in the next manager on the file."""
    gate = Gate()
    async with manager(db_path) as first:
        first.register("slow", gate)
        task = await first.launch("slow", "again")
        await gate.entered[task.id].wait()
    async with manager(db_path) as second:
        second.register("slow", echo)
        done = await finished(second, task.id)
        assert (done.state, done.result) == (TaskState.COMPLETED, "again")
        assert await second.store.check_projection() == []


async def test_pending_tasks_survive_close(db_path: str) -> None:
    """Tasks launched but never started are still pending after a restart, and then run."""
    async with manager(db_path) as first:
        task = await first.launch("echo", "later")
    async with manager(db_path) as second:
        second.register("echo", echo)
        assert (await finished(second, task.id)).result == "later"


async def test_close_twice_is_harmless(db_path: str) -> None:
    """Closing a closed manager does nothing."""
    async with manager(db_path) as tm:
        await tm.launch("idle-agent")
    await closed(tm)
    await closed(tm)
