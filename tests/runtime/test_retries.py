"""TaskManager on each backend: a runner's error recorded, and retries with backoff."""

from __future__ import annotations

from runtime_helpers import fail, payloads, reach

from helpers import finished
from helpers import open_manager as manager
from tasktrail import RunContext, TaskClaimed, TaskFailed, TaskRequeued, TaskState
from tasktrail.testing import FakeClock


async def test_runner_error_text_is_recorded(db_path: str) -> None:
    """A runner's exception is recorded as the task's error, with its type."""
    async with manager(db_path) as tm:
        tm.register("bad", fail)
        done = await finished(tm, (await tm.launch("bad", "xyz")).id)
        assert done.error == "ValueError: boom in xyz"
        failed = [e for e in await tm.history(done.id) if isinstance(e.payload, TaskFailed)]
        assert len(failed) == 1


async def test_retries_until_attempts_are_exhausted(db_path: str) -> None:
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


async def test_retry_succeeds_on_a_later_attempt(db_path: str) -> None:
    """A task that fails once and then succeeds ends completed on attempt two."""

    async def second_time_lucky(ctx: RunContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("transient")
        return "ok"

    async with manager(db_path, retry_backoff=0) as tm:
        tm.register("flaky", second_time_lucky)
        done = await finished(tm, (await tm.launch("flaky", max_attempts=2)).id)
        assert (done.state, done.result, done.attempt) == (TaskState.COMPLETED, "ok", 2)


async def test_single_attempt_failure_is_not_retried(db_path: str) -> None:
    """With the default single attempt, a runner error fails the task at once."""
    async with manager(db_path) as tm:
        tm.register("bad", fail)
        done = await finished(tm, (await tm.launch("bad", "p")).id)
        assert (done.state, done.attempt) == (TaskState.FAILED, 1)
        assert not any(isinstance(p, TaskRequeued) for p in await payloads(tm, done.id))
