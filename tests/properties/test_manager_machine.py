"""A hypothesis state machine over the real TaskManager on each backend (a SQLite file, a
schema on the PostgreSQL server), with a fake clock and fake runners.

The runners block on events that the rules release (to complete or fail), and an
agent-session runner stays ``starting`` until a rule lets its session start, so cancels
land while tasks are pending, starting and running. Rules also move the clock past
deadlines, run scheduler rounds (several at once, too), finish tasks from outside, and
close and reopen the manager. After every step: no limit was ever exceeded, no task left
a terminal state, the projection equals a rebuild from the log, and (liveness) once the
manager is quiet a scheduler round leaves no task pending that could start. Every Task a
call returns equals the log's fold at that version. At the end the runners are released
and the clock moves on: every task must finish and every waiter be answered.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pgserver import Databases
from tasktrail import (
    CancelRequested,
    IllegalTransitionError,
    RunContext,
    StoreClosedError,
    Task,
    TaskCancelled,
    TaskManager,
    TaskState,
    open_store,
)
from tasktrail.testing import FakeClock

T = TypeVar("T")

MAX_RUNNING = 3
LIMITS = {"k": 1, "b": 1}
SETTINGS: dict[str, Any] = {
    "max_running": MAX_RUNNING,
    "limits": LIMITS,
    "poll_interval": 1.0,
    "task_ttl": 5000.0,
    "run_timeout": 60.0,
    "queue_timeout": 3000.0,
    "start_timeout": 600.0,
    "retry_backoff": 2.0,
    "cancel_grace": 5.0,
    "lease_timeout": 4000.0,  # longer than any step: a step of the clock is not a pause
}
LIVE = (TaskState.PENDING, TaskState.STARTING, TaskState.RUNNING)


@dataclass(eq=False)
class Run:
    """One attempt as the fake runner sees it."""

    task_id: str
    attempt: int
    key: str
    session: bool
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Session runners only: set when the rules let the session start."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False
    phase: str = "creating"
    """creating (session not started yet), running, exited."""


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await, failing instead of hanging (a hang guard, not a timing claim)."""
    try:
        async with asyncio.timeout(10):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"{awaitable!r} never returned") from None


class ManagerMachine(RuleBasedStateMachine):
    """Launch, finish, fail, cancel, time out, tick, close and reopen, in any order."""

    def __init__(self, database: str) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.database = database
        self.clock = FakeClock()
        self.runs: list[Run] = []
        self.running = 0
        self.peak = 0
        self.by_key: dict[str, int] = {}
        self.peak_by_key: dict[str, int] = {}
        self.draining = False
        self.task_ids: list[str] = []
        self.terminal: dict[str, Task] = {}
        # (manager generation, waiter task) for every wait() started.
        self.waiters: list[tuple[int, asyncio.Task[Task]]] = []
        self.generation = 0
        self.tm: TaskManager | None = None
        self.tm = self.run(self.open())

    # -- plumbing ----------------------------------------------------------------------------

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await awaitable

        return self.runner.run(wrapper())

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        async def create() -> asyncio.Task[T]:
            return asyncio.create_task(coro)

        return self.run(create())

    @property
    def manager(self) -> TaskManager:
        assert self.tm is not None
        return self.tm

    async def open(self) -> TaskManager:
        tm = TaskManager(self.database, clock=self.clock, **SETTINGS)
        await guarded(tm.__aenter__())
        tm.register("a", self.function_runner)
        tm.register("b", self.function_runner)
        tm.register("session", SessionRunner(self))
        return tm

    def teardown(self) -> None:
        try:
            # After a failed step only clean up: the drain's checks would hide the failure.
            if self.tm is not None and sys.exc_info()[1] is None:
                self.run(self.drain())
        finally:
            try:
                if self.tm is not None:
                    self.run(guarded(self.tm.close()))
            finally:
                self.runner.close()
                for _, waiter in self.waiters:  # answered by close(): nothing left unretrieved
                    if waiter.done() and not waiter.cancelled():
                        waiter.exception()

    # -- the fake runners -------------------------------------------------------------------

    def enter(self, ctx: RunContext, *, session: bool) -> Run:
        task = ctx.task
        key = task.concurrency_key or task.agent
        run = Run(task.id, ctx.attempt, key, session, phase="creating" if session else "running")
        self.runs.append(run)
        self.running += 1
        self.by_key[key] = self.by_key.get(key, 0) + 1
        self.peak = max(self.peak, self.running)
        self.peak_by_key[key] = max(self.peak_by_key.get(key, 0), self.by_key[key])
        return run

    def exit(self, run: Run) -> None:
        run.phase = "exited"
        self.running -= 1
        self.by_key[run.key] -= 1

    async def body(self, run: Run) -> str:
        run.phase = "running"
        if not self.draining:
            await run.release.wait()
        if run.fail:
            raise RuntimeError(f"told to fail attempt {run.attempt}")
        return f"done {run.task_id} {run.attempt}"

    async def function_runner(self, ctx: RunContext) -> str:
        run = self.enter(ctx, session=False)
        try:
            return await self.body(run)
        finally:
            self.exit(run)

    # -- helpers -----------------------------------------------------------------------------

    def blocked(self) -> list[Run]:
        return [r for r in self.runs if r.phase == "running" and not r.release.is_set()]

    def creating(self) -> list[Run]:
        return [r for r in self.runs if r.phase == "creating" and not r.ready.is_set()]

    def release_everything(self) -> None:
        for run in self.runs:
            run.ready.set()
            run.release.set()

    async def drain(self) -> None:
        """Release every runner and move the clock on: every task must finish."""
        tm = self.manager
        self.draining = True
        live: list[Task] = []
        seen: object = None
        stalled = 0
        while stalled < 5:  # give up after five rounds in which nothing changed
            self.release_everything()
            await self.clock.advance(7)  # past backoffs, grace periods and poll intervals
            await guarded(tm.tick())
            live = [t for t in await tm.list_tasks() if t.state in LIVE]
            if not live:
                break
            now = [(t.id, t.version) for t in live]
            stalled = stalled + 1 if now == seen else 0
            seen = now
            await tm.store.wait_for_commit(0.01)
        assert not live, f"tasks never finished: {[(t.id, t.state, t.reason) for t in live]}"
        for _ in range(5):
            if all(waiter.done() for _, waiter in self.waiters):
                break
            await self.clock.advance(7)  # waiters of closed managers wake and give up
            await tm.store.wait_for_commit(0.01)
        for generation, waiter in self.waiters:
            assert waiter.done(), "a waiter was never answered"
            if generation != self.generation and isinstance(waiter.exception(), StoreClosedError):
                continue  # waiting on a manager that was closed meanwhile
            answer = waiter.result()
            assert answer == await tm.state_at(answer.id, version=answer.version)
            assert answer.is_terminal
            assert answer.state is (await tm.get_task(answer.id)).state  # type: ignore[union-attr]
        await self.check_log(final=True)

    async def check_log(self, *, final: bool = False) -> None:
        tm = self.manager
        assert await tm.store.check_projection() == []
        for task in await tm.list_tasks():
            history = await tm.history(task.id)
            requested = any(isinstance(e.payload, CancelRequested) for e in history)
            cancelled = any(isinstance(e.payload, TaskCancelled) for e in history)
            # cancelled only ever results from a cancel request; a request only ends cancelled
            assert not cancelled or requested, f"{task.id} cancelled without a request"
            if final and requested:
                assert task.state is TaskState.CANCELLED, f"{task.id}: {task.state} after cancel"
        if final:
            assert (await tm.verify()).events == await tm.store.head()

    # -- rules -------------------------------------------------------------------------------

    @rule(
        agent=st.sampled_from(["a", "b", "session"]),
        key=st.sampled_from([None, "k"]),
        priority=st.integers(0, 2),
        attempts=st.integers(1, 2),
        child=st.booleans(),
        wait=st.booleans(),
        data=st.data(),
    )
    def launch(
        self,
        agent: str,
        key: str | None,
        priority: int,
        attempts: int,
        child: bool,
        wait: bool,
        data: st.DataObject,
    ) -> None:
        """A new task is pending at once; sometimes a child, sometimes someone waits for it."""
        parent = None
        if child and self.task_ids:
            parent = data.draw(st.sampled_from(self.task_ids), label="parent")
        task = self.run(
            self.manager.launch(
                agent, f"prompt {len(self.task_ids)}", concurrency_key=key, priority=priority,
                max_attempts=attempts, parent_id=parent,
            )
        )  # fmt: skip
        assert (task.state, task.version, task.parent_id) == (TaskState.PENDING, 1, parent)
        self.assert_as_logged(task)
        self.task_ids.append(task.id)
        if wait:
            self.waiters.append((self.generation, self.spawn(self.manager.wait(task.id))))

    # Which runners are blocked depends on how far the manager got: pick by index, so the
    # data drawn never depends on timing.
    @rule(index=st.integers(0, 7), fail=st.booleans())
    def finish_runner(self, index: int, fail: bool) -> None:
        """A blocked runner returns, or raises."""
        blocked = self.blocked()
        if not blocked:
            return
        run = blocked[index % len(blocked)]
        run.fail = fail
        run.release.set()
        self.run(asyncio.sleep(0))

    @rule(index=st.integers(0, 7))
    def start_session(self, index: int) -> None:
        """A session runner's session exists: it records the start."""
        creating = self.creating()
        if not creating:
            return
        run = creating[index % len(creating)]
        run.ready.set()
        self.run(asyncio.sleep(0))

    @precondition(lambda self: self.task_ids)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data: st.DataObject, force: bool) -> None:
        """cancel returns the task cancelled, stopping, or (if it had finished) unchanged."""
        task_id = data.draw(st.sampled_from(self.task_ids), label="task_id")
        before = self.run(self.manager.get_task(task_id))
        assert before is not None
        after = self.run(guarded(self.manager.cancel(task_id, force=force)))
        self.assert_as_logged(after)
        if before.is_terminal:
            assert after == before
        elif force:
            assert after.is_terminal
        else:
            assert after.is_terminal or after.cancel_requested

    @precondition(lambda self: self.task_ids)
    @rule(data=st.data(), complete=st.booleans())
    def finish_from_outside(self, data: st.DataObject, complete: bool) -> None:
        """complete_task/fail_task finish a live task, or raise IllegalTransitionError."""
        task_id = data.draw(st.sampled_from(self.task_ids), label="task_id")
        tm = self.manager
        call = tm.complete_task(task_id, "outside") if complete else tm.fail_task(task_id, "no")
        try:
            done = self.run(guarded(call))
        except IllegalTransitionError:
            now = self.run(tm.get_task(task_id))
            assert now is not None
            assert now.is_terminal or now.cancel_requested
        else:
            assert done.state is (TaskState.COMPLETED if complete else TaskState.FAILED)
            self.assert_as_logged(done)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0, 31.0, 61.0, 3001.0]))
    def advance(self, seconds: float) -> None:
        """The clock moves on, then a scheduler round runs."""
        self.run(self.clock.advance(seconds))
        self.run(guarded(self.manager.tick()))

    @rule()
    def tick(self) -> None:
        """One scheduler round."""
        self.run(guarded(self.manager.tick()))

    @rule(count=st.integers(2, 4))
    def concurrent_ticks(self, count: int) -> None:
        """Several scheduler rounds at once."""

        async def ticks() -> None:
            await asyncio.gather(*(self.manager.tick() for _ in range(count)))

        self.run(guarded(ticks()))

    @rule()
    def close_and_reopen(self) -> None:
        """close() leaves nothing starting or running; a new manager takes over the database."""
        self.run(guarded(self.manager.close()))
        self.tm = None
        assert all(run.phase == "exited" for run in self.runs)

        async def left_live() -> list[Task]:
            async with open_store(self.database) as store:
                return await store.list_tasks(state=(TaskState.STARTING, TaskState.RUNNING))

        assert self.run(left_live()) == []
        self.generation += 1
        self.tm = self.run(self.open())

    @rule()
    def quiet_round(self) -> None:
        """Once the manager is quiet, one scheduler round leaves nothing startable pending:
        a task can wait only for a slot here, its key's limit, its backoff, or a runner."""
        self.run(guarded(self.assert_nothing_startable_waits()))

    async def assert_nothing_startable_waits(self) -> None:
        tm = self.manager
        worker = tm.worker
        for _ in range(100):  # outcomes being recorded, claims in flight: let them land
            await tm.store.drain()
            if not worker._finishing and not worker._claim_lock.locked():
                break
            await asyncio.sleep(0)
        await tm.tick()
        await tm.store.drain()
        if worker.room() <= 0:
            return
        now = self.clock.time()
        active = await tm.store.active_counts()
        for task in await tm.list_tasks(state=TaskState.PENDING):
            startable = (
                not task.cancel_requested
                and (task.not_before is None or task.not_before <= now)
                and active.get(task.limit_key, 0) < LIMITS.get(task.limit_key, MAX_RUNNING + 1)
                and task.id not in worker.running
            )
            assert not startable, f"{task.id} could start but waits: {task}, active {active}"

    def assert_as_logged(self, task: Task) -> None:
        """``task`` (returned by a call) equals the fold of the log at its version."""
        assert task == self.run(self.manager.state_at(task.id, version=task.version))

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def limits_never_exceeded(self) -> None:
        """Runners never ran more than max_running at once, nor more than a key's limit."""
        assert self.peak <= MAX_RUNNING
        for key, limit in LIMITS.items():
            assert self.peak_by_key.get(key, 0) <= limit
        if self.tm is not None:
            active = self.run(self.manager.store.active_counts())
            assert sum(active.values()) <= MAX_RUNNING
            for key, limit in LIMITS.items():
                assert active.get(key, 0) <= limit

    @invariant()
    def terminal_states_are_absorbing(self) -> None:
        """A task seen finished never changes again."""
        if self.tm is None:
            return
        for task in self.run(self.manager.list_tasks()):
            if task.id in self.terminal:
                assert task == self.terminal[task.id]
            elif task.is_terminal:
                self.terminal[task.id] = task

    @invariant()
    def projection_matches_log(self) -> None:
        """The task table equals a rebuild from the log; cancels only follow requests."""
        if self.tm is not None:
            self.run(self.check_log())


class SessionRunner:
    """A fake agent-session runner: ``starting`` until the rules let its session start."""

    manages_start = True

    def __init__(self, machine: ManagerMachine) -> None:
        self.machine = machine

    async def __call__(self, ctx: RunContext) -> str:
        machine = self.machine
        run = machine.enter(ctx, session=True)
        try:
            if not machine.draining:
                await run.ready.wait()
            await ctx.started(f"session-{ctx.task.id}-{ctx.attempt}")
            return await machine.body(run)
        finally:
            machine.exit(run)


def test_manager_machine(databases: Databases, machine_settings: settings) -> None:
    """The manager machine holds on each backend, every run on a new, empty database."""
    run_state_machine_as_test(lambda: ManagerMachine(databases.new()), settings=machine_settings)
