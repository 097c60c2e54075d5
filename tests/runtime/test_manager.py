"""TaskManager with real runners on a real database (SQLite file, PostgreSQL server): the seed
API and its guarantees."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    CancelRequested,
    IllegalTransitionError,
    OutputAppended,
    RunContext,
    StoreClosedError,
    Task,
    TaskCancelled,
    TaskCancelledError,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskExistsError,
    TaskFailed,
    TaskFailedError,
    TaskManager,
    TaskNotFoundError,
    TaskRequeued,
    TaskStarted,
    TaskState,
    TasktrailError,
    WaitTimeoutError,
)
from tasktrail.testing import FakeClock

TERMINAL = (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


async def closed(tm: TaskManager) -> None:
    """Close ``tm``; fail instead of hanging if close() never returns."""
    try:
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await tm.close()
    except TimeoutError:
        raise AssertionError("TaskManager.close() did not return") from None


class Gate:
    """A runner whose attempts block until the test releases them; it records what it saw."""

    def __init__(self, result: Any = "done") -> None:
        self.result = result
        self.entered: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.release: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.order: list[str] = []
        self.cancelled: set[str] = set()
        self.running = 0
        self.peak = 0
        self.by_key: defaultdict[str, int] = defaultdict(int)
        self.peak_by_key: defaultdict[str, int] = defaultdict(int)

    async def __call__(self, ctx: RunContext) -> Any:
        task = ctx.task
        key = task.concurrency_key or task.agent
        self.running += 1
        self.by_key[key] += 1
        self.peak = max(self.peak, self.running)
        self.peak_by_key[key] = max(self.peak_by_key[key], self.by_key[key])
        self.order.append(task.id)
        self.entered[task.id].set()
        try:
            await self.release[task.id].wait()
        except asyncio.CancelledError:
            self.cancelled.add(task.id)
            raise
        finally:
            self.running -= 1
            self.by_key[key] -= 1
        return self.result


async def eventually(check: Callable[[], bool | Awaitable[bool]], tm: TaskManager) -> None:
    """Return once ``check()`` is true, re-checking after each commit (10 s hang guard)."""
    deadline = time.monotonic() + 10
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the condition never became true")
        await tm.store.wait_for_commit(0.02)


async def reach(tm: TaskManager, task_id: str, state: TaskState, attempt: int = 0) -> Task:
    """Wait until the task is in ``state`` (with at least ``attempt``) and return it."""
    seen: list[Task] = []

    async def check() -> bool:
        task = await tm.get_task(task_id)
        assert task is not None
        seen[:] = [task]
        return task.state is state and task.attempt >= attempt

    await eventually(check, tm)
    return seen[0]


async def payloads(tm: TaskManager, task_id: str) -> list[Any]:
    return [event.payload for event in await tm.history(task_id)]


async def fail(ctx: RunContext) -> Any:
    raise ValueError(f"boom in {ctx.task.prompt}")


async def echo(ctx: RunContext) -> Any:
    return ctx.task.prompt


@pytest.fixture
def db_path(database: str) -> str:
    """A new database of each backend (SQLite file, PostgreSQL schema) for every test."""
    return database


# -- launching and reading ---------------------------------------------------------------------


async def test_launch_returns_pending_task_at_once(db_path: Path) -> None:
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


async def test_get_task_of_unknown_id_is_none(db_path: Path) -> None:
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
    db_path: Path, call: Callable[[TaskManager], Awaitable[Any]]
) -> None:
    """Every call but get_task raises TaskNotFoundError, a LookupError, for an unknown id."""
    async with manager(db_path) as tm:
        with pytest.raises(TaskNotFoundError) as caught:
            await call(tm)
        assert isinstance(caught.value, LookupError)
        assert isinstance(caught.value, TasktrailError)
        assert caught.value.task_id == "nobody"
        assert await tm.list_tasks() == []


async def test_list_tasks_filters_by_state(db_path: Path) -> None:
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


# -- waiting -----------------------------------------------------------------------------------


async def test_wait_returns_the_terminal_task(db_path: Path) -> None:
    """wait returns the task once it completed, with its result."""
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        task = await tm.launch("echo", "hello")
        done = await finished(tm, task.id)
        assert done.state is TaskState.COMPLETED
        assert done.result == "hello"
        assert done.finished_at is not None
        assert done == await tm.get_task(task.id)


async def test_many_concurrent_waiters_all_wake(db_path: Path) -> None:
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


async def test_waiter_on_cancelled_task_wakes_with_it(db_path: Path) -> None:
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


async def test_wait_timeout_raises_wait_timeout_error(db_path: Path) -> None:
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


async def test_waiter_is_answered_when_the_manager_closes(db_path: Path) -> None:
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


async def test_wait_with_zero_timeout_on_live_task_raises_at_once(db_path: Path) -> None:
    """wait(timeout=0) on a live task raises WaitTimeoutError without waiting."""
    async with manager(db_path) as tm:
        task = await tm.launch("nobody-runs-this")
        with pytest.raises(WaitTimeoutError):
            await tm.wait(task.id, timeout=0)


# -- output ------------------------------------------------------------------------------------


async def test_get_output_returns_written_text(db_path: Path) -> None:
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


async def test_get_output_with_wait_returns_after_the_task_finished(db_path: Path) -> None:
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


async def test_get_output_wait_timeout_raises(db_path: Path) -> None:
    """get_output(wait=True, timeout=0) on a live task raises WaitTimeoutError."""
    async with manager(db_path) as tm:
        task = await tm.launch("nobody-runs-this")
        with pytest.raises(WaitTimeoutError):
            await tm.get_output(task.id, wait=True, timeout=0)


async def test_many_small_writes_are_coalesced(db_path: Path) -> None:
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


async def test_buffered_output_is_written_when_the_runner_fails(db_path: Path) -> None:
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


# -- run ---------------------------------------------------------------------------------------


async def test_run_returns_the_result(db_path: Path) -> None:
    """run launches, waits and returns the runner's result."""
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        assert await tm.run("echo", "hi there") == "hi there"


async def test_run_raises_task_failed_with_runner_error(db_path: Path) -> None:
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


async def test_run_raises_task_cancelled_when_cancelled(db_path: Path) -> None:
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


async def test_run_timeout_raises_wait_timeout_error(db_path: Path) -> None:
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


# -- completing and failing from outside --------------------------------------------------------


async def test_complete_pending_task_from_outside(db_path: Path) -> None:
    """complete_task on a pending task completes it with the result, on a legal path."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        done = await tm.complete_task(task.id, {"answer": 42})
        assert done.state is TaskState.COMPLETED
        assert done.result == {"answer": 42}
        assert await finished(tm, task.id) == done
        kinds = [type(p) for p in await payloads(tm, task.id)]
        assert kinds == [TaskCreated, TaskClaimed, TaskStarted, TaskCompleted]


async def test_fail_pending_task_from_outside(db_path: Path) -> None:
    """fail_task on a pending task fails it with the error text."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        done = await tm.fail_task(task.id, "it broke")
        assert done.state is TaskState.FAILED
        assert done.error == "it broke"


async def test_fail_task_accepts_an_exception(db_path: Path) -> None:
    """fail_task with an exception records its type and message."""
    async with manager(db_path) as tm:
        task = await tm.launch("external-agent")
        done = await tm.fail_task(task.id, KeyError("missing"))
        assert done.error is not None
        assert "KeyError" in done.error
        assert "missing" in done.error


async def test_complete_running_task_from_outside_stops_its_runner(db_path: Path) -> None:
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


async def test_fail_running_task_from_outside(db_path: Path) -> None:
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
    db_path: Path,
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


# -- cancelling --------------------------------------------------------------------------------


async def test_cancel_pending_task_is_immediate(db_path: Path) -> None:
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


async def test_cancel_running_task_delivers_cancelled_error_to_runner(db_path: Path) -> None:
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


async def test_cooperative_runner_sees_the_cancel_request(db_path: Path) -> None:
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


async def test_cancel_finished_task_returns_it_unchanged(db_path: Path) -> None:
    """cancel on a completed task is a no-op that returns it unchanged."""
    async with manager(db_path) as tm:
        tm.register("echo", echo)
        task = await tm.launch("echo", "x")
        done = await finished(tm, task.id)
        assert await tm.cancel(task.id) == done
        assert len(await tm.history(task.id)) == done.version  # nothing was appended
        assert await tm.get_task(task.id) == done


async def test_force_cancel_is_immediate_even_if_the_runner_resists(db_path: Path) -> None:
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


async def test_cancel_cascades_to_children_and_grandchildren(db_path: Path) -> None:
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


async def test_cancel_of_a_child_leaves_the_parent_alone(db_path: Path) -> None:
    """Cancelling a child does not cancel its parent."""
    async with manager(db_path) as tm:
        parent = await tm.launch("idle-agent")
        child = await tm.launch("idle-agent", parent_id=parent.id)
        await tm.cancel(child.id)
        assert (await tm.get_task(parent.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_cancel_all_cancels_every_unfinished_task(db_path: Path) -> None:
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


async def test_cancel_after_cancel_is_a_no_op(db_path: Path) -> None:
    """A second cancel of a cancelled task returns it unchanged."""
    async with manager(db_path) as tm:
        task = await tm.launch("idle-agent")
        first = await tm.cancel(task.id)
        assert await tm.cancel(task.id) == first


# -- launching with a custom id ------------------------------------------------------------------


async def test_launch_with_existing_id_raises_and_leaves_the_task(db_path: Path) -> None:
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


async def test_launch_with_id_of_finished_task_raises(db_path: Path) -> None:
    """A finished task's id cannot be reused either; the task stays as it was."""
    async with manager(db_path) as tm:
        await tm.launch("idle-agent", task_id="custom-2")
        done = await tm.complete_task("custom-2", "result")
        with pytest.raises(TaskExistsError):
            await tm.launch("idle-agent", task_id="custom-2")
        assert await tm.get_task("custom-2") == done


# -- concurrency limits and order ----------------------------------------------------------------


async def test_max_running_is_never_exceeded(db_path: Path) -> None:
    """With max_running=3, at most three runners run at once; every task still completes."""
    gate = Gate()
    async with manager(db_path, max_running=3) as tm:
        tm.register("slow", gate)
        tasks = [await tm.launch("slow", str(i)) for i in range(10)]
        for task in tasks:
            await gate.entered[task.id].wait()
            assert gate.running <= 3
            gate.release[task.id].set()
        for task in tasks:
            assert (await finished(tm, task.id)).state is TaskState.COMPLETED
        assert gate.peak == 3


async def test_per_key_limits_are_never_exceeded(db_path: Path) -> None:
    """limits={key: n} caps each concurrency key (or agent) separately."""
    gate = Gate()
    async with manager(db_path, max_running=None, limits={"a": 1, "shared": 2}) as tm:
        tm.register("a", gate)
        tm.register("b", gate)
        tasks = [await tm.launch("a") for _ in range(4)]
        tasks += [await tm.launch("b", concurrency_key="shared") for _ in range(5)]
        tasks += [await tm.launch("a", concurrency_key="free") for _ in range(3)]
        await eventually(lambda: len(gate.order) == 6, tm)
        assert (gate.by_key["a"], gate.by_key["shared"], gate.by_key["free"]) == (1, 2, 3)
        done_ids: set[str] = set()
        while len(done_ids) < len(tasks):
            await eventually(lambda: any(i not in done_ids for i in gate.order), tm)
            current = next(i for i in gate.order if i not in done_ids)
            gate.release[current].set()
            assert (await finished(tm, current)).state is TaskState.COMPLETED
            done_ids.add(current)
        assert dict(gate.peak_by_key) == {"a": 1, "shared": 2, "free": 3}


async def test_limits_count_tasks_of_every_process(db_path: Path) -> None:
    """A key's limit counts tasks started by another manager on the same file."""
    gate = Gate()
    async with manager(db_path, limits={"k": 1}) as first:
        first.register("a", gate)
        held = await first.launch("a", concurrency_key="k")
        await gate.entered[held.id].wait()
        async with manager(db_path, limits={"k": 1}) as second:
            second.register("a", gate)
            queued = await second.launch("a", concurrency_key="k")
            await second.tick()
            await first.tick()
            assert (await second.get_task(queued.id)).state is TaskState.PENDING  # type: ignore[union-attr]
            gate.release[held.id].set()
            await finished(first, held.id)
            await gate.entered[queued.id].wait()
            gate.release[queued.id].set()
            assert (await finished(second, queued.id)).state is TaskState.COMPLETED


async def test_concurrent_ticks_never_exceed_max_running(db_path: Path) -> None:
    """Scheduler rounds running at once still start at most max_running tasks."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock, max_running=1) as tm:
        for _ in range(6):
            await tm.launch("slow")
        tm.register("slow", gate)
        await asyncio.gather(*(tm.tick() for _ in range(6)))
        await eventually(lambda: len(gate.order) >= 1, tm)
        assert gate.peak <= 1
        started = [t for t in await tm.list_tasks() if t.state is not TaskState.PENDING]
        assert len(started) == 1


async def test_tasks_of_one_key_start_first_in_first_out(db_path: Path) -> None:
    """Within one concurrency key, tasks start in the order they were launched."""
    clock = FakeClock()
    order: list[str] = []

    async def record(ctx: RunContext) -> None:
        order.append(ctx.task.prompt)

    async with manager(db_path, clock=clock, limits={"k": 1}) as tm:
        tasks = [await tm.launch("a", str(i), concurrency_key="k") for i in range(10)]
        tm.register("a", record)
        for task in tasks:
            await finished(tm, task.id)
        assert order == [str(i) for i in range(10)]


async def test_tasks_launched_together_start_in_launch_order(db_path: Path) -> None:
    """Launches committed together (one group commit) still start first-in, first-out."""
    order: list[str] = []

    async def record(ctx: RunContext) -> None:
        order.append(ctx.task.prompt)

    async with manager(db_path, max_running=1) as tm:
        tasks = await asyncio.gather(*(tm.launch("a", str(i)) for i in range(10)))
        tm.register("a", record)
        for task in tasks:
            await finished(tm, task.id)
        assert order == [str(i) for i in range(10)]


async def test_higher_priority_starts_first(db_path: Path) -> None:
    """A pending task with a higher priority starts before older, lower-priority ones."""
    order: list[str] = []

    async def record(ctx: RunContext) -> None:
        order.append(ctx.task.prompt)

    async with manager(db_path, max_running=1) as tm:
        low = await tm.launch("a", "low")
        mid = await tm.launch("a", "mid", priority=5)
        high = await tm.launch("a", "high", priority=10)
        tm.register("a", record)
        for task in (low, mid, high):
            await finished(tm, task.id)
        assert order == ["high", "mid", "low"]


async def test_started_at_excludes_queue_time(db_path: Path) -> None:
    """A task queued behind a full slot gets started_at when it really starts."""
    clock = FakeClock()
    gate = Gate()
    async with manager(db_path, clock=clock, max_running=1) as tm:
        tm.register("slow", gate)
        first = await tm.launch("slow")
        await gate.entered[first.id].wait()
        queued = await tm.launch("slow")
        created = clock.time()
        await clock.advance(100)
        await tm.tick()
        assert (await tm.get_task(queued.id)).started_at is None  # type: ignore[union-attr]
        gate.release[first.id].set()
        await gate.entered[queued.id].wait()
        gate.release[queued.id].set()
        done = await finished(tm, queued.id)
        assert done.created_at.timestamp() == created
        assert done.started_at is not None
        assert done.started_at.timestamp() == created + 100
        assert done.finished_at is not None
        assert done.finished_at.timestamp() == created + 100


# -- retries -----------------------------------------------------------------------------------


async def test_retries_until_attempts_are_exhausted(db_path: Path) -> None:
    """A task failing every time is tried max_attempts times, with backoff, then fails."""
    clock = FakeClock()
    attempts: list[int] = []

    async def flaky(ctx: RunContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt} broke")

    async with manager(db_path, clock=clock, retry_backoff=10) as tm:
        tm.register("flaky", flaky)
        task = await tm.launch("flaky", max_attempts=3)
        start = clock.time()
        first = await reach(tm, task.id, TaskState.PENDING, attempt=1)
        assert first.not_before == start + 10
        await tm.tick()
        assert attempts == [1]  # backoff not over
        await clock.advance(10)
        await tm.tick()
        second = await reach(tm, task.id, TaskState.PENDING, attempt=2)
        assert second.not_before == start + 10 + 20
        await clock.advance(20)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.attempt == 3
        assert done.error is not None
        assert "attempt 3 broke" in done.error
        assert attempts == [1, 2, 3]
        history = await tm.history(task.id)
        claims = [e.payload.attempt for e in history if isinstance(e.payload, TaskClaimed)]
        assert claims == [1, 2, 3]
        requeues = [e for e in history if isinstance(e.payload, TaskRequeued)]
        assert len(requeues) == 2
        assert all(e.reason and "failed" in e.reason for e in requeues)
        assert "attempt 1 broke" in (requeues[0].reason or "")


async def test_retry_succeeds_on_a_later_attempt(db_path: Path) -> None:
    """A task that fails once and then succeeds ends completed on attempt two."""

    async def second_time_lucky(ctx: RunContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("transient")
        return "ok"

    async with manager(db_path, retry_backoff=0) as tm:
        tm.register("flaky", second_time_lucky)
        done = await finished(tm, (await tm.launch("flaky", max_attempts=2)).id)
        assert (done.state, done.result, done.attempt) == (TaskState.COMPLETED, "ok", 2)


async def test_single_attempt_failure_is_not_retried(db_path: Path) -> None:
    """With the default single attempt, a runner error fails the task at once."""
    async with manager(db_path) as tm:
        tm.register("bad", fail)
        done = await finished(tm, (await tm.launch("bad", "p")).id)
        assert (done.state, done.attempt) == (TaskState.FAILED, 1)
        assert not any(isinstance(p, TaskRequeued) for p in await payloads(tm, done.id))


# -- timeouts ----------------------------------------------------------------------------------


def _no_cancel(events: list[Any]) -> bool:
    return not any(isinstance(p, TaskCancelled | CancelRequested) for p in events)


async def test_run_timeout_fails_the_task(db_path: Path) -> None:
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


async def test_run_timeout_with_attempts_left_retries(db_path: Path) -> None:
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


async def test_queue_timeout_fails_a_pending_task(db_path: Path) -> None:
    """A task pending past queue_timeout fails with a reason, never cancelled."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, queue_timeout=60) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(59)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]
        await clock.advance(2)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.error is not None
        assert "queue timeout" in done.error
        assert done.reason
        assert _no_cancel(await payloads(tm, task.id))


async def test_queue_timeout_does_not_touch_running_tasks(db_path: Path) -> None:
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


async def test_task_ttl_fails_a_running_task(db_path: Path) -> None:
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


async def test_task_ttl_fails_a_pending_task(db_path: Path) -> None:
    """A pending task past task_ttl fails with a reason, never cancelled."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, task_ttl=600) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(599)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]
        await clock.advance(2)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.error is not None
        assert "TTL" in done.error
        assert _no_cancel(await payloads(tm, task.id))


async def test_no_ttl_means_tasks_live_forever(db_path: Path) -> None:
    """task_ttl=None never expires a task."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, task_ttl=None) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(10**7)
        await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]


# -- slots -------------------------------------------------------------------------------------


async def test_slots_are_freed_after_runner_exceptions(db_path: Path) -> None:
    """With one slot, twenty failing tasks in a row leave the slot free for the next task."""
    async with manager(db_path, max_running=1, limits={"bad": 1}) as tm:
        tm.register("bad", fail)
        tm.register("echo", echo)
        failing = [await tm.launch("bad", str(i)) for i in range(20)]
        for task in failing:
            assert (await finished(tm, task.id)).state is TaskState.FAILED
        assert (await finished(tm, (await tm.launch("echo", "x")).id)).state is TaskState.COMPLETED
        assert (await finished(tm, (await tm.launch("bad", "y")).id)).state is TaskState.FAILED
        assert await tm.store.active_counts() == {}


async def test_slots_are_freed_after_cancellation(db_path: Path) -> None:
    """With one slot, cancelled running tasks leave the slot free for the next task."""
    gate = Gate()
    async with manager(db_path, max_running=1, limits={"slow": 1}) as tm:
        tm.register("slow", gate)
        for force in (False, True, False):
            task = await tm.launch("slow")
            await gate.entered[task.id].wait()
            assert (await tm.cancel(task.id, force=force)).state is TaskState.CANCELLED
        last = await tm.launch("slow")
        await gate.entered[last.id].wait()
        gate.release[last.id].set()
        assert (await finished(tm, last.id)).state is TaskState.COMPLETED


async def test_unregistered_agent_does_not_take_a_slot(db_path: Path) -> None:
    """Tasks of an agent with no runner here stay pending without blocking other agents."""
    async with manager(db_path, max_running=1) as tm:
        tm.register("echo", echo)
        orphans = [await tm.launch("nobody-runs-this") for _ in range(3)]
        assert (await finished(tm, (await tm.launch("echo", "x")).id)).result == "x"
        for orphan in orphans:
            assert (await tm.get_task(orphan.id)).state is TaskState.PENDING  # type: ignore[union-attr]


# -- closing and reopening ---------------------------------------------------------------------


async def test_close_requeues_running_attempts(db_path: Path) -> None:
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
    db_path: Path, monkeypatch: pytest.MonkeyPatch
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


async def test_new_manager_runs_requeued_tasks(db_path: Path) -> None:
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


async def test_pending_tasks_survive_close(db_path: Path) -> None:
    """Tasks launched but never started are still pending after a restart, and then run."""
    async with manager(db_path) as first:
        task = await first.launch("echo", "later")
    async with manager(db_path) as second:
        second.register("echo", echo)
        assert (await finished(second, task.id)).result == "later"


async def test_close_twice_is_harmless(db_path: Path) -> None:
    """Closing a closed manager does nothing."""
    async with manager(db_path) as tm:
        await tm.launch("idle-agent")
    await closed(tm)
    await closed(tm)


# -- retention ---------------------------------------------------------------------------------


async def test_retention_hides_old_finished_tasks_from_list(db_path: Path) -> None:
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


async def test_retention_does_not_fail_or_cancel_anything(db_path: Path) -> None:
    """Retention only hides: a live task past the retention period is still pending."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, retention=10, task_ttl=None) as tm:
        task = await tm.launch("idle-agent")
        await clock.advance(100)
        await tm.tick()
        assert [t.id for t in await tm.list_tasks()] == [task.id]
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]


# -- the log -----------------------------------------------------------------------------------


async def test_log_verifies_and_projection_matches_after_a_busy_run(db_path: Path) -> None:
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


async def test_runner_error_text_is_recorded(db_path: Path) -> None:
    """A runner's exception is recorded as the task's error, with its type."""
    async with manager(db_path) as tm:
        tm.register("bad", fail)
        done = await finished(tm, (await tm.launch("bad", "xyz")).id)
        assert done.error == "ValueError: boom in xyz"
        failed = [e for e in await tm.history(done.id) if isinstance(e.payload, TaskFailed)]
        assert len(failed) == 1


async def test_concurrent_rounds_never_exceed_max_running(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler round counts the claims of another round still in flight: a second
    round that reads the queue after the first one's claim committed, but before that
    round resumed, starts nothing beyond max_running."""
    running = peak = 0
    release = asyncio.Event()

    async def blocked(ctx: RunContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1

    async with manager(db_path, max_running=1, clock=FakeClock()) as tm:
        for _ in range(3):
            await tm.launch("a", "x")
        append = tm.store.append

        async def committed_then_slow(*args: Any, **kwargs: Any) -> Any:
            result = await append(*args, **kwargs)
            await asyncio.sleep(0.1)  # committed; the caller resumes only later
            return result

        monkeypatch.setattr(tm.store, "append", committed_then_slow)
        tm.register("a", blocked)  # wakes the scheduler: its round claims one task
        await asyncio.sleep(0.05)
        await tm.tick()  # a second round while the first one's claim is in flight
        await asyncio.sleep(0.2)
        assert peak == 1
        release.set()
