"""Runners and waiting helpers shared by the runtime tests."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from tasktrail import RunContext, Task, TaskManager, TaskState


async def echo(ctx: RunContext) -> Any:
    """A runner returning its task's prompt."""
    return ctx.task.prompt


async def fail(ctx: RunContext) -> Any:
    """A runner raising ValueError("boom in <prompt>")."""
    raise ValueError(f"boom in {ctx.task.prompt}")


class StartOrder:
    """A runner that records the prompts of the tasks it runs, in the order they start."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def __call__(self, ctx: RunContext) -> None:
        self.prompts.append(ctx.task.prompt)


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
    """The payloads of the task's events, oldest first."""
    return [event.payload for event in await tm.history(task_id)]
