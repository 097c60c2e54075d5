"""TaskManager on each backend: launching tasks (with a custom id too) and reading them back
(get_task, list_tasks, unknown ids), and a log that verifies after a busy run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from runtime_helpers import Gate, echo, fail

from helpers import finished
from helpers import open_manager as manager
from tasktrail import TaskExistsError, TaskManager, TaskNotFoundError, TaskState, TasktrailError

# -- launching and reading ---------------------------------------------------------------------


async def test_launch_returns_pending_task_at_once(db_path: str) -> None:
    """launch returns the new task in pending with what was asked, before any runner runs."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("coder", gate)
        task = await tm.launch("coder", "write tests", description="d", metadata={"k": 1})
        assert task.state is TaskState.PENDING
        assert (task.agent, task.prompt, task.description) == ("coder", "write tests", "d")
        assert task.metadata == {"k": 1}
        assert (task.attempt, task.version, task.started_at, task.finished_at) == (0, 1, None, None)
        gate.release[task.id].set()


async def test_get_task_of_unknown_id_is_none(db_path: str) -> None:
    """get_task of an id nobody launched returns None."""
    async with manager(db_path) as tm:
        assert await tm.get_task("nobody") is None


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda tm: tm.wait("nobody"), id="wait"),
        pytest.param(lambda tm: tm.wait("nobody", timeout=1), id="wait-timeout"),
        pytest.param(lambda tm: tm.get_output("nobody"), id="get_output"),
        pytest.param(lambda tm: tm.get_output("nobody", wait=True), id="get_output-wait"),
        pytest.param(lambda tm: tm.complete_task("nobody", 1), id="complete_task"),
        pytest.param(lambda tm: tm.fail_task("nobody", "x"), id="fail_task"),
        pytest.param(lambda tm: tm.cancel("nobody"), id="cancel"),
        pytest.param(lambda tm: tm.cancel("nobody", force=True), id="cancel-force"),
        pytest.param(lambda tm: tm.history("nobody"), id="history"),
        pytest.param(lambda tm: tm.state_at("nobody"), id="state_at"),
        pytest.param(lambda tm: tm.launch("coder", parent_id="nobody"), id="launch-parent"),
    ],
)
async def test_calls_on_unknown_id_raise_task_not_found(
    db_path: str, call: Callable[[TaskManager], Awaitable[Any]]
) -> None:
    """Every call but get_task raises TaskNotFoundError, a LookupError, for an unknown id."""
    async with manager(db_path) as tm:
        with pytest.raises(TaskNotFoundError) as caught:
            await call(tm)
        assert isinstance(caught.value, LookupError)
        assert isinstance(caught.value, TasktrailError)
        assert caught.value.task_id == "nobody"
        assert await tm.list_tasks() == []


async def test_list_tasks_filters_by_state(db_path: str) -> None:
    """list_tasks(state) returns exactly the tasks in that state, oldest first."""
    async with manager(db_path) as tm:
        first = await tm.launch("nobody-runs-this", "1")
        second = await tm.launch("nobody-runs-this", "2")
        third = await tm.launch("nobody-runs-this", "3")
        await tm.complete_task(second.id, "ok")
        await tm.fail_task(third.id, "bad")
        assert [t.id for t in await tm.list_tasks()] == [first.id, second.id, third.id]
        assert [t.id for t in await tm.list_tasks(TaskState.PENDING)] == [first.id]
        assert [t.id for t in await tm.list_tasks("completed")] == [second.id]
        assert [t.id for t in await tm.list_tasks(TaskState.FAILED)] == [third.id]
        assert await tm.list_tasks(TaskState.CANCELLED) == []


# -- launching with a custom id ----------------------------------------------------------------


async def test_launch_with_existing_id_raises_and_leaves_the_task(db_path: str) -> None:
    """Launching with a task_id that exists raises TaskExistsError; the task is untouched."""
    async with manager(db_path) as tm:
        first = await tm.launch("idle-agent", "original", task_id="custom-1")
        assert first.id == "custom-1"
        with pytest.raises(TaskExistsError) as caught:
            await tm.launch("other-agent", "overwrite", task_id="custom-1")
        assert isinstance(caught.value, TasktrailError)
        assert caught.value.task_id == "custom-1"
        assert await tm.get_task("custom-1") == first
        assert len(await tm.history("custom-1")) == 1


async def test_launch_with_id_of_finished_task_raises(db_path: str) -> None:
    """A finished task's id cannot be reused either; the task stays as it was."""
    async with manager(db_path) as tm:
        await tm.launch("idle-agent", task_id="custom-2")
        done = await tm.complete_task("custom-2", "result")
        with pytest.raises(TaskExistsError):
            await tm.launch("idle-agent", task_id="custom-2")
        assert await tm.get_task("custom-2") == done


# -- the log -----------------------------------------------------------------------------------


async def test_log_verifies_and_projection_matches_after_a_busy_run(db_path: str) -> None:
    """After tasks complete, fail and get cancelled, the chain verifies and rebuild == live."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        tm.register("bad", fail)
        tm.register("slow", gate)
        tasks = [await tm.launch(agent, str(i)) for i, agent in enumerate(["echo", "bad"] * 5)]
        slow = await tm.launch("slow")
        for task in tasks:
            await finished(tm, task.id)
        await gate.entered[slow.id].wait()
        await tm.cancel(slow.id)
        report = await tm.verify()
        assert report.events == sum([len(await tm.history(t.id)) for t in [*tasks, slow]])
        assert await tm.store.check_projection() == []
