"""One attempt of a task in this process: run the runner, decide what ends the attempt."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from tasktrail.errors import (
    IllegalTransitionError,
    ProcessFailedError,
    TasktrailError,
    VersionConflictError,
)
from tasktrail.events import Event, TaskCancelled, TaskCompleted, TaskFailed, TaskRequeued
from tasktrail.projection import Task
from tasktrail.runtime.clock import Clock
from tasktrail.runtime.context import RunContext, Runner

__all__ = ["Attempt", "Outcome", "StopReason", "retry_or_fail"]

StopReason = Literal["cancel", "timeout", "ttl", "lost", "shutdown"]
Outcome = tuple[Event | None, str | None]
"""The event that ends an attempt and its reason; ``(None, None)``: record nothing."""


def retry_or_fail(
    task: Task, error: str, *, now: float, backoff: float, exit_code: int | None = None
) -> tuple[Event, str]:
    """Re-queue with exponential backoff while attempts remain, else fail."""
    if task.attempt < task.max_attempts:
        delay = backoff * 2 ** (task.attempt - 1)
        return (
            TaskRequeued(not_before=now + delay),
            f"attempt {task.attempt} of {task.max_attempts} failed: {error}; retry in {delay:g} s",
        )
    failed = TaskFailed(error=error, exit_code=exit_code)
    return failed, f"attempt {task.attempt} of {task.max_attempts} failed"


@dataclass(eq=False)
class Attempt:
    """One attempt running in this manager."""

    ctx: RunContext
    runner: asyncio.Future[Any] | None = None
    """The runner's own task while it runs; cancelling it stops the runner only."""
    stop_reason: StopReason | None = None
    stop_detail: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, why: StopReason, detail: str) -> None:
        """Stop the runner (the first reason given is the one recorded)."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = why, detail
        if self.runner is not None:
            self.runner.cancel()

    async def run(self, runner: Runner | None, *, clock: Clock, backoff: float) -> Outcome:
        """Run ``runner``; return the outcome to record.

        Raises only when the task moved on without this attempt (IllegalTransitionError,
        VersionConflictError) or when the caller itself is cancelled.
        """
        ctx = self.ctx
        try:
            if runner is None:
                raise LookupError(f"no runner registered for agent {ctx.task.agent!r}")
            if not getattr(runner, "manages_start", False):
                await ctx.started()  # no-op when the claim already recorded the start
            self.runner = asyncio.ensure_future(runner(ctx))
            if self.stop_reason is not None:
                self.runner.cancel()  # stopped while it was starting
            result = await self.runner
            await ctx.flush()
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if self.stop_reason is None or (this is not None and this.cancelling()):
                raise  # not ours: the manager itself is being cancelled
            await self._flush_quietly()
            return self._stopped(now=clock.time(), backoff=backoff)
        except Exception as err:
            if isinstance(err, IllegalTransitionError | VersionConflictError):
                raise  # the task moved on without us
            await self._flush_quietly()
            error = f"{type(err).__name__}: {err}"
            code = err.exit_code if isinstance(err, ProcessFailedError) else None
            return retry_or_fail(ctx.task, error, now=clock.time(), backoff=backoff, exit_code=code)
        if ctx.cancel_requested:
            return TaskCancelled(forced=ctx.force), "the runner stopped after the cancel request"
        return TaskCompleted(result=result), None

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(TasktrailError):
            await self.ctx.flush()

    def _stopped(self, *, now: float, backoff: float) -> Outcome:
        task = self.ctx.task
        match self.stop_reason:
            case "cancel":
                return TaskCancelled(forced=self.ctx.force), self.stop_detail
            case "timeout":
                return retry_or_fail(task, self.stop_detail, now=now, backoff=backoff)
            case "ttl":
                return TaskFailed(error=self.stop_detail), self.stop_detail
            case "shutdown":
                return TaskRequeued(), self.stop_detail
            case _:
                return None, None  # lost: someone else finished it
