"""TaskManager on each backend: max_running and per-key limits, slots freed after every
ending, and the order tasks start in (FIFO, priority)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_helpers import Gate, StartOrder, echo, eventually, fail

from helpers import finished
from helpers import open_manager as manager
from tasktrail import RunContext, TaskState
from tasktrail.testing import FakeClock

# -- concurrency limits ------------------------------------------------------------------------


async def test_max_running_is_never_exceeded(db_path: str) -> None:
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


async def test_per_key_limits_are_never_exceeded(db_path: str) -> None:
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


async def test_limits_count_tasks_of_every_process(db_path: str) -> None:
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


async def test_concurrent_ticks_never_exceed_max_running(db_path: str) -> None:
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


async def test_concurrent_rounds_never_exceed_max_running(
    db_path: str, monkeypatch: pytest.MonkeyPatch
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
        claim = tm.store.claim
        committed, resume = asyncio.Event(), asyncio.Event()

        async def committed_then_held(request: Any) -> Any:
            result = await claim(request)
            if not committed.is_set():  # the first claim: committed, its caller held
                committed.set()
                await resume.wait()
            return result

        monkeypatch.setattr(tm.store, "claim", committed_then_held)
        tm.register("a", blocked)  # wakes the scheduler: its round claims one task
        await committed.wait()
        second = asyncio.create_task(tm.tick())  # a round while the first claim is held
        resume.set()
        await second
        await eventually(lambda: running == 1, tm)
        assert len(await tm.list_tasks(state="pending")) == 2
        assert peak == 1
        release.set()


# -- slots -------------------------------------------------------------------------------------


async def test_slots_are_freed_after_runner_exceptions(db_path: str) -> None:
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


async def test_slots_are_freed_after_cancellation(db_path: str) -> None:
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


async def test_unregistered_agent_does_not_take_a_slot(db_path: str) -> None:
    """Tasks of an agent with no runner here stay pending without blocking other agents."""
    async with manager(db_path, max_running=1) as tm:
        tm.register("echo", echo)
        orphans = [await tm.launch("nobody-runs-this") for _ in range(3)]
        assert (await finished(tm, (await tm.launch("echo", "x")).id)).result == "x"
        for orphan in orphans:
            assert (await tm.get_task(orphan.id)).state is TaskState.PENDING  # type: ignore[union-attr]


# -- start order -------------------------------------------------------------------------------


async def test_tasks_of_one_key_start_first_in_first_out(db_path: str) -> None:
    """Within one concurrency key, tasks start in the order they were launched."""
    clock = FakeClock()
    started = StartOrder()
    async with manager(db_path, clock=clock, limits={"k": 1}) as tm:
        tasks = [await tm.launch("a", str(i), concurrency_key="k") for i in range(10)]
        tm.register("a", started)
        for task in tasks:
            await finished(tm, task.id)
        assert started.prompts == [str(i) for i in range(10)]


async def test_tasks_launched_together_start_in_launch_order(db_path: str) -> None:
    """Launches committed together (one group commit) still start first-in, first-out."""
    started = StartOrder()
    async with manager(db_path, max_running=1) as tm:
        tasks = await asyncio.gather(*(tm.launch("a", str(i)) for i in range(10)))
        tm.register("a", started)
        for task in tasks:
            await finished(tm, task.id)
        assert started.prompts == [str(i) for i in range(10)]


async def test_higher_priority_starts_first(db_path: str) -> None:
    """A pending task with a higher priority starts before older, lower-priority ones."""
    started = StartOrder()
    async with manager(db_path, max_running=1) as tm:
        low = await tm.launch("a", "low")
        mid = await tm.launch("a", "mid", priority=5)
        high = await tm.launch("a", "high", priority=10)
        tm.register("a", started)
        for task in (low, mid, high):
            await finished(tm, task.id)
        assert started.prompts == ["high", "mid", "low"]


async def test_started_at_excludes_queue_time(db_path: str) -> None:
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
