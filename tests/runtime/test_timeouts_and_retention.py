"""TaskManager on each backend: run and queue timeouts and the task TTL fail a task (never
cancel it); retention hides old finished tasks."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_helpers import Gate, eventually, payloads

from helpers import finished
from helpers import open_manager as manager
from tasktrail import CancelRequested, TaskCancelled, TaskCompleted, TaskRequeued, TaskState
from tasktrail.testing import FakeClock

# -- timeouts ----------------------------------------------------------------------------------


def _no_cancel(events: list[Any]) -> bool:
    return not any(isinstance(p, TaskCancelled | CancelRequested) for p in events)


async def test_run_timeout_fails_the_task(db_path: str) -> None:
    """A runner past run_timeout is stopped and the task fails with a reason, not cancelled."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock, run_timeout=30) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
        await clock.advance(29)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.RUNNING  # type: ignore[union-attr]
        await clock.advance(2)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.error is not None
        assert "run timeout" in done.error
        assert done.reason
        assert task.id in gate.cancelled
        assert _no_cancel(await payloads(tm, task.id))


async def test_run_timeout_with_attempts_left_retries(db_path: str) -> None:
    """A run timeout with attempts left re-queues the task for another attempt."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock, run_timeout=30, retry_backoff=0) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow", max_attempts=2)
        await gate.entered[task.id].wait()
        await clock.advance(31)
        await tm.tick()
        await eventually(lambda: len(gate.order) == 2, tm)
        gate.release[task.id].set()
        done = await finished(tm, task.id)
        assert (done.state, done.attempt) == (TaskState.COMPLETED, 2)
        requeue = next(e for e in await tm.history(task.id) if isinstance(e.payload, TaskRequeued))
        assert requeue.reason is not None
        assert "run timeout" in requeue.reason


@pytest.mark.parametrize(
    ("setting", "seconds", "named"),
    [
        pytest.param("queue_timeout", 60, "queue timeout", id="queue_timeout"),
        pytest.param("task_ttl", 600, "TTL", id="task_ttl"),
    ],
)
async def test_a_deadline_fails_a_pending_task(
    db_path: str, setting: str, seconds: int, named: str
) -> None:
    """A task pending past queue_timeout or task_ttl fails with a reason, never cancelled."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, **{setting: seconds}) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(seconds - 1)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]
        await clock.advance(2)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.error is not None
        assert named in done.error
        assert done.reason
        assert _no_cancel(await payloads(tm, task.id))


async def test_queue_timeout_does_not_touch_running_tasks(db_path: str) -> None:
    """queue_timeout counts only the wait for a first start, not the run."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock, queue_timeout=60) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
        await clock.advance(120)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.RUNNING  # type: ignore[union-attr]
        gate.release[task.id].set()
        assert (await finished(tm, task.id)).state is TaskState.COMPLETED


async def test_task_ttl_fails_a_running_task(db_path: str) -> None:
    """A running task past task_ttl is stopped and fails with a reason, never cancelled."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock, task_ttl=600, max_attempts=3) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
        await clock.advance(601)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.error is not None
        assert "TTL" in done.error
        assert done.reason
        assert task.id in gate.cancelled
        assert _no_cancel(await payloads(tm, task.id))
        assert not any(isinstance(p, TaskRequeued) for p in await payloads(tm, task.id))


async def test_no_ttl_means_tasks_live_forever(db_path: str) -> None:
    """task_ttl=None never expires a task."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, task_ttl=None) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(10**7)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]


# -- retention ---------------------------------------------------------------------------------


async def test_retention_hides_old_finished_tasks_from_list(db_path: str) -> None:
    """Finished tasks older than retention leave list_tasks; live ones and history stay."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, retention=3600, task_ttl=None) as tm:
        old = await tm.complete_task((await tm.launch("idle-agent")).id, "old")
        live = await tm.launch("idle-agent")
        await clock.advance(3599)
        assert {t.id for t in await tm.list_tasks()} == {old.id, live.id}
        await clock.advance(2)
        assert [t.id for t in await tm.list_tasks()] == [live.id]
        assert await tm.list_tasks(TaskState.COMPLETED) == []
        history = await tm.history(old.id)
        assert isinstance(history[-1].payload, TaskCompleted)
        assert history[-1].payload.result == "old"


async def test_retention_does_not_fail_or_cancel_anything(db_path: str) -> None:
    """Retention only hides: a live task past the retention period is still pending."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, retention=10, task_ttl=None) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(100)
        await tm.tick()
        assert [t.id for t in await tm.list_tasks()] == [task.id]
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]
