"""One test per defect of the seed managers (SPEC, introduction): each must be impossible here.

Defects: 1 lost tasks on restart, 2 tasks stuck running, 3 cancelled tasks coming back, 4
leaked concurrency slots, 5 a task completed by an ``idle`` the session reported before it
took the prompt up, 6 lost or duplicated completion notifications (waiters).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from runtime_helpers import echo

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    AgentSessionRunner,
    RunContext,
    Task,
    TaskCompleted,
    TaskFailed,
    TaskManager,
    TaskState,
    TasktrailError,
)
from tasktrail.testing import FakeClock


async def event_types(tm: TaskManager, task_id: str) -> list[str]:
    return [event.type for event in await tm.history(task_id)]


class SessionRunner:
    """An agent-session runner that records its own start, once its session exists.

    While the session is being created the task is ``starting``. This runner is careless
    in the way the seeds were: cancelled while creating the session, it finishes creating
    it anyway, reports the start, and returns a result.
    """

    manages_start = True

    def __init__(self) -> None:
        self.creating = asyncio.Event()
        self.session_ready = asyncio.Event()
        self.returned = asyncio.Event()

    async def __call__(self, ctx: RunContext) -> str:
        self.creating.set()
        try:
            await self.session_ready.wait()
        except asyncio.CancelledError:
            await self.session_ready.wait()  # ignores the cancel, like the seeds did
        try:
            await ctx.started("session-1")
            return "resurrected"
        finally:
            self.returned.set()


async def test_cancel_while_starting_never_resurrects(db_path: str) -> None:
    """Seed 1: a runner that starts and returns after a cancel while starting never completes it."""
    runner = SessionRunner()
    async with manager(db_path, cancel_grace=0.05) as tm:
        tm.register("session", runner)
        task = await tm.launch("session")
        await runner.creating.wait()
        assert (await tm.get_task(task.id)).state is TaskState.STARTING  # type: ignore[union-attr]
        cancelling = asyncio.create_task(tm.cancel(task.id))
        while not (await tm.get_task(task.id)).cancel_requested:  # type: ignore[union-attr]
            await tm.store.wait_for_commit(0.02)
        runner.session_ready.set()
        await runner.returned.wait()
        await cancelling
        done = await finished(tm, task.id)
        assert done.state is TaskState.CANCELLED
        assert "task.completed" not in await event_types(tm, task.id)


async def test_runner_returning_after_cancel_while_running_never_completes(db_path: str) -> None:
    """Seed 1: a running runner that swallows the cancel and returns leaves the task cancelled."""
    entered = asyncio.Event()

    async def swallows_cancel(ctx: RunContext) -> str:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # careless, like the seeds
            await asyncio.Event().wait()
        return "resurrected"

    async with manager(db_path) as tm:
        tm.register("careless", swallows_cancel)
        task = await tm.launch("careless")
        await entered.wait()
        await tm.cancel(task.id)
        done = await finished(tm, task.id)
        assert done.state is TaskState.CANCELLED
        assert done.result is None
        assert not any(isinstance(e.payload, TaskCompleted) for e in await tm.history(task.id))


async def test_cancelled_task_never_becomes_failed(db_path: str) -> None:
    """A runner that raises while handling its cancel leaves the task cancelled, not failed."""
    entered = asyncio.Event()

    async def breaks_on_cancel(ctx: RunContext) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async with manager(db_path) as tm:
        tm.register("fragile", breaks_on_cancel)
        task = await tm.launch("fragile", max_attempts=3)
        await entered.wait()
        await tm.cancel(task.id)
        done = await finished(tm, task.id)
        assert done.state is TaskState.CANCELLED
        assert not any(isinstance(e.payload, TaskFailed) for e in await tm.history(task.id))
        assert "task.requeued" not in await event_types(tm, task.id)


async def test_two_waiters_both_wake(db_path: str) -> None:
    """Two waiters on one task, in this manager and in another on the same file, both wake."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(ctx: RunContext) -> str:
        entered.set()
        await release.wait()
        return "result"

    async with manager(db_path) as tm, manager(db_path, run_tasks=False) as other:
        tm.register("slow", slow)
        task = await tm.launch("slow")
        here = [asyncio.create_task(tm.wait(task.id)) for _ in range(2)]
        there = asyncio.create_task(other.wait(task.id))
        await entered.wait()
        release.set()
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            results = await asyncio.gather(*here, there)
        assert [(t.state, t.result) for t in results] == [(TaskState.COMPLETED, "result")] * 3


async def test_waiter_on_cancelled_task_wakes(db_path: str) -> None:
    """A waiter on a pending task wakes with it when it is cancelled (here or elsewhere)."""
    async with manager(db_path) as tm, manager(db_path, run_tasks=False) as other:
        task = await tm.launch("nobody-runs-this")
        here = asyncio.create_task(tm.wait(task.id))
        there = asyncio.create_task(other.wait(task.id))
        await asyncio.sleep(0)
        await other.cancel(task.id)
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            results = await asyncio.gather(here, there)
        assert [t.state for t in results] == [TaskState.CANCELLED] * 2


async def test_duplicate_custom_task_id_is_rejected_never_overwritten(db_path: str) -> None:
    """Launching twice with one custom id raises a TasktrailError; the first task is kept."""
    async with manager(db_path) as tm:
        first = await tm.launch("idle", "first prompt", task_id="my-task")
        with pytest.raises(TasktrailError):
            await tm.launch("other", "second prompt", task_id="my-task")
        assert await tm.get_task("my-task") == first
        assert await event_types(tm, "my-task") == ["task.created"]


async def test_concurrent_launches_with_one_id_create_one_task(db_path: str) -> None:
    """Racing launches with the same custom id: exactly one wins, the others raise."""
    async with manager(db_path) as tm:
        outcomes = await asyncio.gather(
            *(tm.launch("idle", str(i), task_id="raced") for i in range(5)),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, Task)]
        assert len(winners) == 1
        assert all(isinstance(o, TasktrailError) for o in outcomes if o not in winners)
        assert await tm.get_task("raced") == winners[0]
        assert await event_types(tm, "raced") == ["task.created"]


async def test_duration_excludes_queue_time(db_path: str) -> None:
    """A task queued 100 s behind a full slot, then run 5 s, shows 5 s from start to finish."""
    clock = FakeClock()
    releases = {"first": asyncio.Event(), "second": asyncio.Event()}
    entered = {"first": asyncio.Event(), "second": asyncio.Event()}

    async def slow(ctx: RunContext) -> None:
        entered[ctx.task.prompt].set()
        await releases[ctx.task.prompt].wait()

    async with manager(db_path, clock=clock, max_running=1) as tm:
        tm.register("slow", slow)
        first = await tm.launch("slow", "first")
        await entered["first"].wait()
        second = await tm.launch("slow", "second")
        await clock.advance(100)
        releases["first"].set()
        await finished(tm, first.id)
        await entered["second"].wait()
        await clock.advance(5)
        releases["second"].set()
        done = await finished(tm, second.id)
        assert done.started_at is not None
        assert done.finished_at is not None
        assert (done.finished_at - done.started_at).total_seconds() == 5
        assert (done.started_at - done.created_at).total_seconds() == 100


async def test_slots_never_leak_after_exceptions_or_cancellation(db_path: str) -> None:
    """With one slot, failures, cancels and forced cancels all give the slot back."""
    entered = asyncio.Event()

    async def behave(ctx: RunContext) -> str:
        if ctx.task.prompt == "raise":
            raise RuntimeError("boom")
        if ctx.task.prompt == "block":
            entered.set()
            await asyncio.Event().wait()
        return "ok"

    async with manager(db_path, max_running=1, limits={"agent": 1}) as tm:
        tm.register("agent", behave)
        for _ in range(3):
            failing = await tm.launch("agent", "raise")
            assert (await finished(tm, failing.id)).state is TaskState.FAILED
            for force in (False, True):
                entered.clear()
                blocked = await tm.launch("agent", "block")
                await entered.wait()
                await tm.cancel(blocked.id, force=force)
                assert (await finished(tm, blocked.id)).state is TaskState.CANCELLED
        last = await tm.launch("agent", "finish")
        assert (await finished(tm, last.id)).result == "ok"
        assert await tm.store.active_counts() == {}


async def test_tasks_are_not_lost_on_restart(db_path: str) -> None:
    """A task launched before a restart (never started, or running) runs after it."""
    entered = asyncio.Event()

    async def block(ctx: RunContext) -> None:
        entered.set()
        await asyncio.Event().wait()

    async with manager(db_path) as tm:
        tm.register("slow", block)
        queued = await tm.launch("later", "queued")
        running = await tm.launch("slow", "running")
        await entered.wait()

    async with manager(db_path) as tm:
        tm.register("later", echo)
        tm.register("slow", echo)
        assert (await finished(tm, queued.id)).result == "queued"
        assert (await finished(tm, running.id)).result == "running"
        assert await tm.store.check_projection() == []


class EarlyIdleSession:
    """An agent client that reports ``idle`` while the prompt is still being delivered
    (seed 1's defect 5: the status of the session before it took the prompt up), then
    works (``busy``) until the test lets it answer."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.answer = asyncio.Event()
        self.polled = asyncio.Event()
        self.polls = 0

    def push(self, status: str) -> None:
        event = {
            "type": "session.status",
            "properties": {"sessionID": "s1", "status": {"type": status}},
        }
        for listener in self.listeners:
            listener(event)

    async def create_session(self, task: Task) -> str:
        return "s1"

    async def send_prompt(self, session_id: str, prompt: str) -> None:
        self.push("idle")  # what the session said before it took the prompt up

    async def get_status(self, session_id: str) -> str:
        self.polls += 1
        if self.polls >= 2:
            self.polled.set()
        return "idle" if self.answer.is_set() else "busy"

    async def get_result(self, session_id: str) -> str:
        return "the real answer" if self.answer.is_set() else "(nothing yet)"

    async def abort(self, session_id: str) -> None:
        return None


async def test_an_idle_before_the_prompt_was_taken_up_never_completes_the_task(
    db_path: str,
) -> None:
    """An ``idle`` reported before the prompt's delivery is not an answer (seed 1, defect 5)."""
    client = EarlyIdleSession()
    runner = AgentSessionRunner(client, poll_interval=0.01)
    client.listeners.append(runner.handle_session_status)
    async with manager(db_path) as tm:
        tm.register("agent", runner)
        task = await tm.launch("agent", "write the report")
        # Wait until the session has been asked twice (it is working), or the task ended.
        asked = asyncio.ensure_future(client.polled.wait())
        ended = asyncio.ensure_future(tm.wait(task.id))
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await asyncio.wait({asked, ended}, return_when=asyncio.FIRST_COMPLETED)
        asked.cancel()
        ended.cancel()
        now = await tm.get_task(task.id)
        assert now is not None
        assert now.state is TaskState.RUNNING, now
        client.answer.set()
        client.push("idle")
        done = await finished(tm, task.id)
        assert (done.state, done.result) == (TaskState.COMPLETED, "the real answer")
