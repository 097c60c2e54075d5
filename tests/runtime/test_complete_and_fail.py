"""TaskManager on each backend: complete_task and fail_task from outside the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from runtime_helpers import Gate, eventually, payloads

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    IllegalTransitionError,
    Task,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskManager,
    TaskStarted,
    TaskState,
)

TERMINAL = (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


async def test_complete_pending_task_from_outside(db_path: str) -> None:
    """complete_task on a pending task completes it with the result, on a legal path."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        done = await tm.complete_task(task.id, {"answer": 42})
        assert done.state is TaskState.COMPLETED
        assert done.result == {"answer": 42}
        assert await finished(tm, task.id) == done
        kinds = [type(p) for p in await payloads(tm, task.id)]
        assert kinds == [TaskCreated, TaskClaimed, TaskStarted, TaskCompleted]


async def test_fail_pending_task_from_outside(db_path: str) -> None:
    """fail_task on a pending task fails it with the error text."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        done = await tm.fail_task(task.id, "it broke")
        assert done.state is TaskState.FAILED
        assert done.error == "it broke"


async def test_fail_task_accepts_an_exception(db_path: str) -> None:
    """fail_task with an exception records its type and message."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        done = await tm.fail_task(task.id, KeyError("missing"))
        assert done.error is not None
        assert "KeyError" in done.error
        assert "missing" in done.error


async def test_complete_running_task_from_outside_stops_its_runner(db_path: str) -> None:
    """complete_task on a running task completes it; its runner is stopped, result kept."""
    gate = Gate(result="from runner")
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
        done = await tm.complete_task(task.id, "from outside")
        assert (done.state, done.result) == (TaskState.COMPLETED, "from outside")
        await eventually(lambda: task.id in gate.cancelled, tm)
        final = await finished(tm, task.id)
        assert (final.state, final.result, final.version) == (
            TaskState.COMPLETED,
            "from outside",
            done.version,
        )


async def test_fail_running_task_from_outside(db_path: str) -> None:
    """fail_task on a running task fails it; the runner's later return changes nothing."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
        done = await tm.fail_task(task.id, "stopped by operator")
        assert (done.state, done.error) == (TaskState.FAILED, "stopped by operator")
        gate.release[task.id].set()
        final = await finished(tm, task.id)
        assert (final.state, final.version) == (TaskState.FAILED, done.version)


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda tm, i: tm.complete_task(i, "again"), id="complete"),
        pytest.param(lambda tm, i: tm.fail_task(i, "again"), id="fail"),
    ],
)
@pytest.mark.parametrize(
    "end",
    [
        pytest.param(lambda tm, i: tm.complete_task(i, "first"), id="completed"),
        pytest.param(lambda tm, i: tm.fail_task(i, "first"), id="failed"),
        pytest.param(lambda tm, i: tm.cancel(i), id="cancelled"),
    ],
)
async def test_finishing_a_finished_task_is_illegal_and_changes_nothing(
    db_path: str,
    end: Callable[[TaskManager, str], Awaitable[Task]],
    finish: Callable[[TaskManager, str], Awaitable[Task]],
) -> None:
    """complete_task/fail_task on a finished task raise IllegalTransitionError; task unchanged."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        finished = await end(tm, task.id)
        assert finished.state in TERMINAL
        with pytest.raises(IllegalTransitionError):
            await finish(tm, task.id)
        assert await tm.get_task(task.id) == finished
