"""TaskManager on each backend: cancel (cooperative and forced), cascades, cancel_all."""

from __future__ import annotations

import asyncio

from runtime_helpers import Gate, echo, payloads

from helpers import finished
from helpers import open_manager as manager
from tasktrail import CancelRequested, RunContext, TaskCancelled, TaskState


async def test_cancel_pending_task_is_immediate(db_path: str) -> None:
    """cancel on a pending task returns it cancelled at once; it never runs."""
    gate = Gate()
    async with manager(db_path, max_running=1) as tm:
        tm.register("slow", gate)
        blocker = await tm.launch("slow")
        await gate.entered[blocker.id].wait()
        queued = await tm.launch("slow")
        cancelled = await tm.cancel(queued.id)
        assert cancelled.state is TaskState.CANCELLED
        assert cancelled.reason is not None
        gate.release[blocker.id].set()
        await finished(tm, blocker.id)
        assert queued.id not in gate.order
        assert (await tm.get_task(queued.id)).attempt == 0  # type: ignore[union-attr]


async def test_cancel_running_task_delivers_cancelled_error_to_runner(db_path: str) -> None:
    """cancel on a running task: the runner sees CancelledError and the task ends cancelled."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        task = await tm.launch("slow")
        await gate.entered[task.id].wait()
        cancelled = await tm.cancel(task.id)
        assert cancelled.state is TaskState.CANCELLED
        assert task.id in gate.cancelled
        kinds = [type(p) for p in await payloads(tm, task.id)]
        assert kinds[-2:] == [CancelRequested, TaskCancelled]


async def test_cooperative_runner_sees_the_cancel_request(db_path: str) -> None:
    """A runner can see ctx.cancel_requested once a cancel was requested."""
    seen: list[bool] = []
    entered = asyncio.Event()

    async def cooperative(ctx: RunContext) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            seen.append(ctx.cancel_requested)

    async with manager(db_path) as tm:
        tm.register("coop", cooperative)
        task = await tm.launch("coop")
        await entered.wait()
        assert (await tm.cancel(task.id)).state is TaskState.CANCELLED
        assert seen == [True]


async def test_cancel_finished_task_returns_it_unchanged(db_path: str) -> None:
    """cancel on a completed task is a no-op that returns it unchanged."""
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        task = await tm.launch("echo", "x")
        done = await finished(tm, task.id)
        assert await tm.cancel(task.id) == done
        assert len(await tm.history(task.id)) == done.version  # nothing was appended
        assert await tm.get_task(task.id) == done


async def test_force_cancel_is_immediate_even_if_the_runner_resists(db_path: str) -> None:
    """cancel(force=True) cancels at once; a runner that returns later changes nothing."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def stubborn(ctx: RunContext) -> str:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # keeps running after being cancelled
        return "finished anyway"

    async with manager(db_path) as tm:
        tm.register("stubborn", stubborn)
        task = await tm.launch("stubborn")
        await entered.wait()
        forced = await tm.cancel(task.id, force=True)
        assert forced.state is TaskState.CANCELLED
        release.set()
    async with manager(db_path, run_tasks=False) as reader:  # close() waited for the runner
        assert await reader.get_task(task.id) == forced


async def test_cancel_cascades_to_children_and_grandchildren(db_path: str) -> None:
    """Cancelling a task cancels its children and grandchildren, pending or running."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        parent = await tm.launch("slow", "parent")
        child = await tm.launch("slow", "child", parent_id=parent.id)
        grandchild = await tm.launch("idle-agent", "grandchild", parent_id=child.id)
        sibling = await tm.launch("idle-agent", "other child", parent_id=parent.id)
        stranger = await tm.launch("idle-agent", "unrelated")
        await gate.entered[parent.id].wait()
        await gate.entered[child.id].wait()
        assert (await tm.cancel(parent.id)).state is TaskState.CANCELLED
        for task in (child, grandchild, sibling):
            assert (await finished(tm, task.id)).state is TaskState.CANCELLED
        assert (await tm.get_task(stranger.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_cancel_of_a_child_leaves_the_parent_alone(db_path: str) -> None:
    """Cancelling a child does not cancel its parent."""
    async with manager(db_path) as tm:
        parent = await tm.launch("idle-agent")
        child = await tm.launch("idle-agent", parent_id=parent.id)
        await tm.cancel(child.id)
        assert (await tm.get_task(parent.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_cancel_all_cancels_every_unfinished_task(db_path: str) -> None:
    """cancel_all cancels pending and running tasks and leaves finished ones alone."""
    gate = Gate()
    async with manager(db_path) as tm:
        tm.register("slow", gate)
        done = await tm.complete_task((await tm.launch("idle-agent")).id, "kept")
        running = await tm.launch("slow")
        pending = await tm.launch("idle-agent")
        await gate.entered[running.id].wait()
        result = await tm.cancel_all()
        assert {t.id for t in result} == {running.id, pending.id}
        assert {t.state for t in result} == {TaskState.CANCELLED}
        assert await tm.get_task(done.id) == done
        assert await tm.list_tasks(TaskState.PENDING) == []
        assert await tm.list_tasks(TaskState.RUNNING) == []


async def test_cancel_after_cancel_is_a_no_op(db_path: str) -> None:
    """A second cancel of a cancelled task returns it unchanged."""
    async with manager(db_path) as tm:
        task = await tm.launch("idle-agent")
        first = await tm.cancel(task.id)
        assert await tm.cancel(task.id) == first
