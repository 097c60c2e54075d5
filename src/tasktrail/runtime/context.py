"""What a runner sees of its task: the record, output streaming, the cancel request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tasktrail.errors import IllegalTransitionError
from tasktrail.events import Event, OutputAppended, ProgressReported, TaskStarted
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime.clock import Clock

__all__ = ["RunContext", "Runner", "to_the_end"]


class Runner(Protocol):
    """Runs one attempt of a task: ``await runner(ctx)`` returns the result or raises.

    A plain ``async def fn(ctx)`` is a runner, and so is a plain ``def fn(ctx)``: it runs
    in a worker thread (``asyncio.to_thread``). A runner object with a true
    ``manages_start`` attribute calls ``await ctx.started(session_id)`` itself once its
    session or process exists; for any other runner the start is recorded with the claim.
    """

    def __call__(self, ctx: RunContext) -> Awaitable[Any] | Any: ...


AppendFn = Callable[[str, list[Event], str | None], Awaitable[Task]]


class RunContext:
    """Handed to a runner for one attempt.

    ``await ctx.write(text)`` streams output: chunks are coalesced and written as one
    ``task.output`` event per ``flush_bytes`` or ``flush_interval`` (and when the
    attempt ends), so a chatty runner does not write one event per line.
    """

    def __init__(
        self,
        task: Task,
        *,
        append: AppendFn,
        clock: Clock,
        flush_bytes: int = 16_384,
        flush_interval: float = 0.5,
        cancel_grace: float = 5.0,
    ) -> None:
        self.task = task
        self.cancel_grace = cancel_grace
        """Seconds a runner may take to stop after a (non-forced) cancel."""
        self._append = append
        self._clock = clock
        self.clock = clock
        """The manager's clock: runners that poll or wait should use it."""
        self._flush_bytes = flush_bytes
        self._flush_interval = flush_interval
        self._buffer: list[str] = []
        self._buffered = 0
        self._channel = "stdout"
        self._first_buffered_at = 0.0
        self._started = task.state is TaskState.RUNNING
        self._cancel = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._over = False
        self.force = False
        self._lock = asyncio.Lock()

    @property
    def attempt(self) -> int:
        """This attempt's number (1 for the first)."""
        return self.task.attempt

    @property
    def input(self) -> Any:
        """The task's input (any JSON value; ``None`` when it has none)."""
        return self.task.input

    @property
    def is_started(self) -> bool:
        """Whether the attempt's start is recorded (the task is ``running``)."""
        return self._started

    @property
    def cancel_requested(self) -> bool:
        """Whether a cancel was requested; a cooperative runner stops when it sees it."""
        return self._cancel.is_set()

    async def wait_cancelled(self) -> None:
        """Return once a cancel is requested."""
        await self._cancel.wait()

    def request_cancel(self, *, force: bool = False) -> None:
        """Mark the cancel request (called by the manager)."""
        self.force = self.force or force
        self._cancel.set()

    async def started(self, session_id: str | None = None) -> None:
        """Record that the runner started (with its session or process handle). Idempotent."""
        if self._started:
            return
        self._started = True
        self.task = await self._append(self.task.id, [TaskStarted(session_id=session_id)], None)

    def end(self) -> None:
        """The attempt is over: later writes raise (an abandoned runner learns it)."""
        self._over = True

    def _check_live(self, what: str) -> None:
        if self._over:
            raise IllegalTransitionError(
                self.task.id, self.task.state.value, what,
                detail=f"attempt {self.task.attempt} is over: it was stopped or abandoned",
            )  # fmt: skip

    async def write(self, text: str, *, channel: str = "stdout") -> None:
        """Append output (buffered; see the class docstring). Raises IllegalTransitionError
        once the attempt is over (a runner that ignored its stop)."""
        self._check_live("write output")
        if not text:
            return
        if not isinstance(text, str):
            raise TypeError(f"write() takes str, not {type(text).__name__}")
        async with self._lock:
            if channel != self._channel and self._buffer:
                await self._flush_locked()
            if not self._buffer:
                self._first_buffered_at = self._clock.time()
            self._channel = channel
            self._buffer.append(text)
            self._buffered += len(text)
            if (
                self._buffered >= self._flush_bytes
                or self._clock.time() - self._first_buffered_at >= self._flush_interval
            ):
                await self._flush_locked()

    def write_sync(self, text: str, *, channel: str = "stdout") -> None:
        """``write`` for a plain ``def`` runner, which runs in a worker thread: blocks until
        the text is buffered (or written). Not for the event loop's own thread."""
        asyncio.run_coroutine_threadsafe(self.write(text, channel=channel), self._loop).result()

    async def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Record progress (one event each call: report it at a sensible rate)."""
        self._check_live("report progress")
        await self.flush()
        await self._ensure_started()
        event = ProgressReported(current=current, total=total, message=message)
        self.task = await self._append(self.task.id, [event], None)

    async def flush(self) -> None:
        """Write buffered output now."""
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        await self._ensure_started()
        event = OutputAppended(text=text, channel=self._channel)
        self.task = await self._append(self.task.id, [event], None)
        # Only now: a write that failed keeps its text for the next flush.
        self._buffer, self._buffered = [], 0

    def flush_due(self) -> bool:
        """Whether buffered output has waited ``flush_interval`` (checked by the manager)."""
        return bool(self._buffer) and (
            self._clock.time() - self._first_buffered_at >= self._flush_interval
        )

    async def _ensure_started(self) -> None:
        if not self._started:
            await self.started()


async def to_the_end(cleanup: Awaitable[None]) -> None:
    """Run ``cleanup`` to its end even if the caller is cancelled (again) meanwhile.

    The manager may cancel a runner more than once while it stops; a cleanup cut short
    (ending a process, aborting a session) would leave the work running. A cancel that
    arrived meanwhile is raised once the cleanup finished, so it is never swallowed.
    """
    inner = asyncio.ensure_future(cleanup)
    cancelled = False
    while not inner.done():
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    inner.result()
