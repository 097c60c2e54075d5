"""One attempt of a task in this process: run the runner, decide what ends the attempt.

A stop (a cancel, a timeout, the worker shutting down) cancels the runner and gives it
``cancel_grace`` seconds to end. A runner that is still going after that is abandoned: the
attempt ends as if it had stopped (its outcome is recorded, its slot is free) and the
stubborn coroutine is left to finish on its own, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
from collections.abc import Callable
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
from tasktrail.runtime._aio import first_of
from tasktrail.runtime.clock import Clock
from tasktrail.runtime.context import RunContext, Runner

__all__ = ["Abandoned", "Attempt", "Outcome", "StopReason", "retry_or_fail"]

_log = logging.getLogger("tasktrail.runtime.attempt")  # a documented name

StopReason = Literal["cancel", "timeout", "start", "ttl", "lost", "shutdown", "paused"]
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


class Abandoned:
    """The runners a worker abandoned: off the event loop's list of tasks, still running.

    An abandoned coroutine would keep ``asyncio.run()`` (and ``tasktrail worker``) from
    ever exiting: at shutdown it cancels every task and waits for them all. Taken off the
    loop's list, it runs on while the loop does, and no longer; this set keeps it alive
    (the loop's list holds tasks weakly) until it ends, and logs how it ended.
    """

    def __init__(self) -> None:
        self._runners: set[asyncio.Future[Any]] = set()

    def add(self, runner: asyncio.Future[Any]) -> None:
        """Abandon ``runner``."""
        self._runners.add(runner)
        unregister = getattr(asyncio.tasks, "_unregister_task", None)
        if unregister is not None and isinstance(runner, asyncio.Task):
            unregister(runner)
            runner._log_destroy_pending = False  # type: ignore[attr-defined]  # warned already
        runner.add_done_callback(self._ended)

    def _ended(self, runner: asyncio.Future[Any]) -> None:
        self._runners.discard(runner)
        if not runner.cancelled() and (err := runner.exception()) is not None:
            _log.warning("an abandoned runner ended with %s: %s", type(err).__name__, err)

    def cancel_all(self) -> None:
        """Cancel every abandoned runner still going (the worker stops)."""
        for runner in list(self._runners):
            runner.cancel()


async def _finished(future: asyncio.Future[Any]) -> None:
    """Return once ``future`` is done (never raises its outcome)."""
    await asyncio.wait({future})


@dataclass(eq=False)
class Attempt:
    """One attempt running in this manager."""

    ctx: RunContext
    clock: Clock
    grace: float
    """Seconds the runner has to end after a stop before it is abandoned."""
    started_at: float = 0.0
    """The worker's monotonic time when the attempt began."""
    runner: asyncio.Future[Any] | None = None
    """The runner's own task while it runs; cancelling it stops the runner only."""
    stop_reason: StopReason | None = None
    stop_detail: str = ""
    abandoned: bool = False
    """The runner ignored its stop for ``grace`` seconds and was left behind."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    on_abandon: Callable[[asyncio.Future[Any]], None] | None = None
    _waiting: asyncio.Future[None] | None = None

    def stop(self, why: StopReason, detail: str) -> None:
        """Stop the runner (the first reason given is the one recorded)."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = why, detail
        self.stopping.set()
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)
        if self.runner is not None:
            self.runner.cancel()

    async def run(self, runner: Runner | None, *, backoff: float) -> Outcome:
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
            self.runner = asyncio.ensure_future(_call(runner, ctx))
            if self.stop_reason is not None:
                self.runner.cancel()  # stopped while it was starting
            await self._until_runner_ends()
            result = self.runner.result()
            await ctx.flush()
            if not ctx.cancel_requested:
                await ctx.started()  # a runner that reports its start, but returned without
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if self.stop_reason is None or (this is not None and this.cancelling()):
                raise  # not ours: the manager itself is being cancelled
            await self._flush_quietly()
            return self._stopped(now=self.clock.time(), backoff=backoff)
        except Exception as err:
            if isinstance(err, IllegalTransitionError | VersionConflictError):
                raise  # the task moved on without us
            await self._flush_quietly()
            error = f"{type(err).__name__}: {err}"
            code = err.exit_code if isinstance(err, ProcessFailedError) else None
            return retry_or_fail(
                ctx.task, error, now=self.clock.time(), backoff=backoff, exit_code=code
            )
        if ctx.cancel_requested:
            return TaskCancelled(forced=ctx.force), "the runner stopped after the cancel request"
        return TaskCompleted(result=result), None

    async def _until_runner_ends(self) -> None:
        """Wait for the runner; once stopped, at most ``grace`` seconds more, then abandon it
        (raising CancelledError here, as if it had stopped)."""
        runner = self.runner
        assert runner is not None
        if not runner.done() and not self.stopping.is_set():
            # The common case costs no task: a stop cancels the runner, which ends it (or
            # the runner ignores it, and the grace below applies).
            waiting = self._waiting = asyncio.get_running_loop().create_future()

            def ended(_: asyncio.Future[Any]) -> None:
                if not waiting.done():
                    waiting.set_result(None)

            runner.add_done_callback(ended)
            try:
                await waiting
            finally:
                runner.remove_done_callback(ended)
        while not runner.done():
            await first_of(_finished(runner), self.clock.sleep(self.grace))
            if not runner.done():
                self.abandoned = True
                task = self.ctx.task
                _log.warning(
                    "task %s: the runner of attempt %d ignored its stop (%s) for %g s; "
                    "abandoned, its slot is free",
                    task.id, task.attempt, self.stop_detail, self.grace,
                )  # fmt: skip
                if self.on_abandon is not None:
                    self.on_abandon(runner)
                raise asyncio.CancelledError

    async def _flush_quietly(self) -> None:
        if self.abandoned:
            return  # the runner may still write: its buffer is not ours to flush now
        with contextlib.suppress(TasktrailError):
            await self.ctx.flush()

    def _stopped(self, *, now: float, backoff: float) -> Outcome:
        task = self.ctx.task
        match self.stop_reason:
            case "cancel":
                return TaskCancelled(forced=self.ctx.force), self.stop_detail
            case "timeout" | "start":
                return retry_or_fail(task, self.stop_detail, now=now, backoff=backoff)
            case "ttl":
                return TaskFailed(error=self.stop_detail), self.stop_detail
            case "shutdown" | "paused":
                return TaskRequeued(), self.stop_detail
            case _:
                return None, None  # lost or superseded: someone else decides


async def _call(runner: Runner, ctx: RunContext) -> Any:
    """Call ``runner``: awaited when it is a coroutine function (or returns an awaitable),
    in a worker thread when it is a plain function."""
    if not getattr(runner, "is_blocking", False):
        result = runner(ctx)
        return await result if inspect.isawaitable(result) else result
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, runner, ctx)
    thread: asyncio.Future[Any] = loop.run_in_executor(None, call)
    try:
        result = await asyncio.shield(thread)
    except asyncio.CancelledError:
        # A thread cannot be interrupted: it sees ctx.cancel_requested and may stop. Wait
        # for it; the attempt abandons it, with a warning, once its grace is over.
        await asyncio.wait({thread})
        raise
    return await result if inspect.isawaitable(result) else result
