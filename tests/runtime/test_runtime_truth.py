"""The runtime tells the truth: no task starves, hangs or is misreported (issue: runtime
truth). One test per finding, each on both backends where the backend matters."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import StartOrder, echo

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    AsyncClient,
    CancelRequested,
    InvalidInputError,
    NewEvent,
    RunContext,
    SQLiteEventStore,
    StorageError,
    Task,
    TaskCancelled,
    TaskCreated,
    TaskManager,
    TaskState,
    fold,
)
from tasktrail.testing import FakeClock


class Blocked:
    """A runner whose attempts wait until released; records which tasks entered."""

    def __init__(self) -> None:
        self.entered: dict[str, asyncio.Event] = {}
        self.release = asyncio.Event()

    def event(self, task_id: str) -> asyncio.Event:
        return self.entered.setdefault(task_id, asyncio.Event())

    async def __call__(self, ctx: RunContext) -> str:
        self.event(ctx.task.id).set()
        await self.release.wait()
        return "released"


# -- liveness ----------------------------------------------------------------------------------


async def test_a_full_key_never_hides_the_rest_of_the_queue(db_path: str) -> None:
    """40 queued tasks of a key at its limit, then one of another agent: the latter starts."""
    slow = Blocked()
    async with manager(db_path, max_running=4, limits={"slow": 1}) as tm:
        tm.register("slow", slow)
        tm.register("fast", echo)
        queued = [await tm.launch("slow", f"s{i}") for i in range(40)]
        await slow.event(queued[0].id).wait()
        fast = await tm.launch("fast", "at once")
        done = await finished(tm, fast.id)
        assert (done.state, done.result) == (TaskState.COMPLETED, "at once")
        states = [t.state for t in await tm.store.get_tasks([t.id for t in queued])]
        assert states.count(TaskState.RUNNING) == 1  # the key's limit still holds
        slow.release.set()


async def test_tasks_of_one_key_start_first_in_first_out(db_path: str) -> None:
    """Within one concurrency key (limit 1) tasks start in the order they were launched."""
    started = StartOrder()

    async with manager(db_path, max_running=3, limits={"k": 1}) as tm:
        launched = [await tm.launch("a", str(i), concurrency_key="k") for i in range(8)]
        tm.register("a", started)
        for task in launched:
            await finished(tm, task.id)
    assert started.prompts == [str(i) for i in range(8)]


# -- timeouts and defaults ---------------------------------------------------------------------


class NeverStarts:
    """A session runner whose session is never created (it reports no start)."""

    manages_start = True

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()

    async def __call__(self, ctx: RunContext) -> None:
        self.calls += 1
        self.entered.set()
        await asyncio.Event().wait()


async def test_a_runner_that_never_starts_is_stopped_and_its_slot_freed(db_path: str) -> None:
    """start_timeout ends an attempt stuck in starting, with a reason; the slot is free."""
    clock = FakeClock()
    hung = NeverStarts()
    async with manager(db_path, clock=clock, max_running=1, start_timeout=30) as tm:
        tm.register("session", hung)
        tm.register("echo", echo)
        task = await tm.launch("session", max_attempts=1)
        await hung.entered.wait()
        other = await tm.launch("echo", "next")
        for _ in range(4):  # in steps shorter than the lease
            await clock.advance(10)
            await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.error is not None and "did not start within 30 s" in done.error
        assert (await finished(tm, other.id)).result == "next"


async def test_no_default_deadline_ends_a_healthy_long_task(db_path: str) -> None:
    """A task running for 45 minutes (after 10 queued) is not failed by any default."""
    clock = FakeClock()
    blocked = Blocked()
    async with manager(db_path, clock=clock, poll_interval=1.0, max_running=1) as tm:
        tm.register("long", blocked)
        first = await tm.launch("long", "first")
        second = await tm.launch("long", "second")
        await blocked.event(first.id).wait()
        for _ in range(6 * 10):  # 10 minutes of queue time for the second task
            await clock.advance(10)
            await tm.tick()
        blocked.release.set()
        await finished(tm, first.id)
        blocked.release.clear()
        await blocked.event(second.id).wait()
        for _ in range(6 * 45):  # 45 minutes of run time
            await clock.advance(10)
            await tm.tick()
        assert (await tm.get_task(second.id)).state is TaskState.RUNNING  # type: ignore[union-attr]
        blocked.release.set()
        assert (await finished(tm, second.id)).state is TaskState.COMPLETED


async def test_a_manager_never_applies_its_deadlines_to_tasks_others_queued(
    db_path: str,
) -> None:
    """A worker whose own task_ttl is 1 s leaves a task queued elsewhere without one alone."""
    clock = FakeClock()
    async with AsyncClient(db_path, clock=clock) as client:  # like `tasktrail submit`
        queued = await client.launch("nobody", "work")
    async with manager(db_path, clock=clock, task_ttl=1, poll_interval=1.0) as tm:
        launched = await tm.launch("nobody", "mine")  # recorded: task_ttl=1
        assert (queued.task_ttl, launched.task_ttl) == (None, 1)
        for _ in range(5):
            await clock.advance(2)
            await tm.tick()
        assert (await finished(tm, launched.id)).state is TaskState.FAILED
        assert (await tm.get_task(queued.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_a_launch_only_client_enforces_no_deadline(db_path: str) -> None:
    """A manager with run_tasks=False never fails a task, even one past its recorded TTL."""
    clock = FakeClock()
    async with AsyncClient(db_path, clock=clock, task_ttl=1) as client:
        task = await client.launch("nobody")
    async with manager(db_path, clock=clock, run_tasks=False, task_ttl=1) as tm:
        await clock.advance(3600)
        assert tm.worker_id is None
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]


# -- cancellation always ends ------------------------------------------------------------------


class Stubborn:
    """A runner that swallows cancellation and waits until the test lets it go."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.let_go = asyncio.Event()
        self.cancels = 0

    async def __call__(self, ctx: RunContext) -> str:
        self.entered.set()
        while not self.let_go.is_set():
            try:
                await self.let_go.wait()
            except asyncio.CancelledError:
                self.cancels += 1  # ignored, as a careless runner would
        return "too late"


async def test_a_runner_ignoring_a_cancel_is_abandoned_and_its_slot_freed(db_path: str) -> None:
    """After cancel_grace the task is cancelled and the next task runs, whatever the runner does."""
    stubborn = Stubborn()
    async with manager(db_path, max_running=1, cancel_grace=0.1) as tm:
        tm.register("stubborn", stubborn)
        tm.register("echo", echo)
        task = await tm.launch("stubborn")
        await stubborn.entered.wait()
        after = await tm.cancel(task.id)
        assert after.state is TaskState.CANCELLED
        assert stubborn.cancels >= 1
        nxt = await tm.launch("echo", "runs")
        assert (await finished(tm, nxt.id)).result == "runs"
        stubborn.let_go.set()


async def test_close_is_bounded_by_the_grace_whatever_the_runner_does(db_path: str) -> None:
    """close() returns although a runner ignores cancellation; the task is re-queued."""
    stubborn = Stubborn()
    tm = TaskManager(db_path, poll_interval=0.02, cancel_grace=0.1)
    async with tm:
        tm.register("stubborn", stubborn)
        task = await tm.launch("stubborn")
        await stubborn.entered.wait()
    # (the open_manager helper's hang guard is not used: `async with` itself returned)
    stubborn.let_go.set()
    async with AsyncClient(db_path) as client:
        after = await client.get_task(task.id)
        assert after is not None and after.state is TaskState.PENDING


# -- the audit trail ---------------------------------------------------------------------------


async def test_every_write_records_its_actor_and_reason(db_path: str) -> None:
    """launch, cancel, complete, fail and rerun record the actor and reason they were given."""
    async with manager(db_path, run_tasks=False) as tm:
        a = await tm.launch("x", actor="user:ann", reason="nightly report")
        b = await tm.launch("x")
        c = await tm.launch("x")
        await tm.cancel(a.id, actor="user:bob", reason="wrong month")
        await tm.complete_task(b.id, "done by hand", actor="user:cy", reason="ran it myself")
        await tm.fail_task(c.id, "obsolete", actor="ops", reason="superseded")
        again = await tm.rerun(a.id, actor="user:dee", reason="right month now")
        seen = {
            task.id: [(e.type, e.actor, e.reason) for e in await tm.history(task.id)]
            for task in (a, b, c, again)
        }
    assert seen[a.id][0] == ("task.created", "user:ann", "nightly report")
    assert ("task.cancelled", "user:bob", "wrong month") in seen[a.id]
    assert ("task.completed", "user:cy", "ran it myself") in seen[b.id]
    assert ("task.failed", "ops", "superseded") in seen[c.id]
    assert seen[again.id][0] == ("task.created", "user:dee", "right month now")


async def test_returned_tasks_equal_the_log_for_any_result(db_path: str) -> None:
    """wait(), get_task() and a fold of history() agree, even for a result JSON reshapes."""

    async def odd(ctx: RunContext) -> Any:
        return {"when": datetime(2026, 1, 1, tzinfo=UTC), "t": (1, 2), "s": {3}}

    async with manager(db_path) as tm:
        tm.register("odd", odd)
        task = await tm.launch("odd", metadata={"pair": (1, 2)})
        done = await finished(tm, task.id)
        replayed = None
        for event in await tm.history(task.id):
            replayed = fold(replayed, event)
        assert done == await tm.get_task(task.id) == replayed
        assert done.result == {"when": "2026-01-01T00:00:00Z", "t": [1, 2], "s": [3]}
        assert task.metadata == {"pair": [1, 2]}
        launched_then = await tm.state_at(task.id, version=task.version)
        assert task == launched_then
    async with manager(db_path, run_tasks=False) as tm:
        assert await tm.get_task(task.id) == done


async def test_an_unencodable_result_fails_the_task_with_the_real_reason(db_path: str) -> None:
    """A result JSON cannot hold fails the task naming why, not 'could not be recorded'."""

    async def weird(ctx: RunContext) -> Any:
        return {"handle": object()}

    async with manager(db_path) as tm:
        tm.register("weird", weird)
        done = await finished(tm, (await tm.launch("weird")).id)
    assert done.state is TaskState.FAILED
    assert done.error is not None
    assert "the result could not be stored" in done.error
    assert "object" in done.error


# -- notifications -----------------------------------------------------------------------------


async def test_a_failing_callback_never_blocks_later_deliveries(db_path: str) -> None:
    """A callback that always raises on one task gives up on it and delivers the next."""
    calls: list[str] = []
    second_seen = asyncio.Event()

    async def callback(task: Task) -> None:
        calls.append(task.prompt)
        if task.prompt == "bad":
            raise RuntimeError("cannot deliver this one")
        second_seen.set()

    async with manager(db_path, poll_interval=0.01) as tm:
        tm.register("echo", echo)
        tm.on_finished(callback)
        first = await tm.launch("echo", "bad")
        await finished(tm, first.id)
        second = await tm.launch("echo", "good")
        await finished(tm, second.id)
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await second_seen.wait()
    assert calls.count("bad") == 5
    assert calls[-1] == "good"


async def test_a_finished_parent_still_learns_what_its_children_did(db_path: str) -> None:
    """children() lists a child's final state after the parent ended; callbacks fire for it."""
    blocked = Blocked()
    finishes: list[str] = []
    child_done = asyncio.Event()

    async def callback(task: Task) -> None:
        finishes.append(task.id)
        if task.prompt == "child":
            child_done.set()

    async with manager(db_path) as tm:
        tm.register("echo", echo)
        tm.register("slow", blocked)
        tm.on_finished(callback)
        parent = await tm.launch("echo", "parent")
        await finished(tm, parent.id)
        child = await tm.launch("slow", "child", parent_id=parent.id)
        blocked.release.set()
        await finished(tm, child.id)
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await child_done.wait()
        kids = await tm.children(parent.id)
        assert [(k.id, k.state) for k in kids] == [(child.id, TaskState.COMPLETED)]
    assert child.id in finishes


# -- Python users' expectations ----------------------------------------------------------------


async def test_a_plain_function_runs_in_a_worker_thread(db_path: str) -> None:
    """register() takes a plain def: it runs off the event loop's thread and can write."""
    loop_thread = threading.get_ident()

    def blocking(ctx: RunContext) -> dict[str, Any]:
        ctx.write_sync("from a thread\n")
        return {"off_loop": threading.get_ident() != loop_thread, "input": ctx.input}

    async with manager(db_path) as tm:
        tm.register("sync", blocking)
        task = await tm.launch("sync", input={"n": 3})
        done = await finished(tm, task.id)
        assert done.result == {"off_loop": True, "input": {"n": 3}}
        assert await tm.get_output(task.id) == "from a thread\n"


class NotARunner:
    """A class (not an instance)."""


def generator(ctx: RunContext) -> Any:
    yield ctx


@pytest.mark.parametrize(
    "runner",
    [
        pytest.param(42, id="int"),
        pytest.param("echo", id="str"),
        pytest.param(NotARunner, id="class"),
        pytest.param(generator, id="generator"),
    ],
)
async def test_register_refuses_what_is_not_a_runner(tmp_path: Path, runner: Any) -> None:
    """register() refuses at once what could never run a task."""
    async with manager(tmp_path / "t.db") as tm:
        with pytest.raises(InvalidInputError, match="runner"):
            tm.register("agent", runner)


async def test_list_tasks_filters_by_agent_state_parent_and_time(db_path: str) -> None:
    """list_tasks filters by one or several agents and states, parent, and creation time."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, run_tasks=False) as tm:
        a = await tm.launch("alpha")
        await clock.advance(10)
        middle = clock.time()
        b = await tm.launch("beta", parent_id=a.id)
        c = await tm.launch("gamma")
        await tm.cancel(c.id)

        async def ids(**filters: Any) -> list[str]:
            return [t.id for t in await tm.list_tasks(**filters)]

        assert await ids(agent="alpha") == [a.id]
        assert await ids(agent=["alpha", "gamma"]) == [a.id, c.id]
        assert await ids(state=["pending"]) == [a.id, b.id]
        assert await ids(state=TaskState.CANCELLED) == [c.id]
        assert await ids(parent_id=a.id) == [b.id]
        assert await ids(since=middle) == [b.id, c.id]
        assert await ids(until=datetime.fromtimestamp(middle, UTC)) == [a.id]
        assert await ids(agent="beta", since=middle, state="pending") == [b.id]


async def test_rerun_launches_a_linked_copy(db_path: str) -> None:
    """rerun() copies agent, prompt, input and options; the new task names its original."""

    async def flaky(ctx: RunContext) -> Any:
        if ctx.task.rerun_of is None:
            raise RuntimeError("first time fails")
        return ctx.input

    async with manager(db_path) as tm:
        tm.register("flaky", flaky)
        original = await tm.launch(
            "flaky", "go", input=[1, 2], priority=3, metadata={"k": "v"}, description="d"
        )
        assert (await finished(tm, original.id)).state is TaskState.FAILED
        again = await tm.rerun(original.id)
        assert (again.agent, again.prompt, again.input, again.priority, again.metadata) == (
            "flaky", "go", [1, 2], 3, {"k": "v"},
        )  # fmt: skip
        assert again.rerun_of == original.id
        assert (await finished(tm, again.id)).result == [1, 2]
        assert [t.id for t in await tm.reruns(original.id)] == [again.id]
        created = (await tm.history(again.id))[0].payload
        assert isinstance(created, TaskCreated) and created.rerun_of == original.id


# -- bad settings and input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"poll_interval": math.nan}, id="nan-poll"),
        pytest.param({"lease_timeout": math.inf}, id="inf-lease"),
        pytest.param({"task_ttl": -1}, id="negative-ttl"),
        pytest.param({"cancel_grace": math.nan}, id="nan-grace"),
        pytest.param({"max_running": 10**20}, id="huge-max-running"),
        pytest.param({"limits": {"k": 10**20}}, id="huge-limit"),
        pytest.param({"max_attempts": 0}, id="no-attempts"),
        pytest.param({"poll_interval": 60, "lease_timeout": 30}, id="poll-beyond-lease"),
    ],
)
def test_settings_out_of_range_are_refused(tmp_path: Path, settings: dict[str, Any]) -> None:
    """NaN, infinities, negatives and absurd counts are refused with the setting's name."""
    name = next(iter(settings))
    with pytest.raises(InvalidInputError, match=name):
        TaskManager(tmp_path / "t.db", **settings)


async def test_input_that_json_would_change_is_refused_and_nothing_written(db_path: str) -> None:
    """launch(input=...) refuses a tuple, a set or a datetime; the log stays empty."""
    async with manager(db_path, run_tasks=False) as tm:
        for bad in [(1, 2), {1, 2}, datetime.now(UTC), {1: "int key"}]:
            with pytest.raises(InvalidInputError, match="input"):
                await tm.launch("x", input=bad)
        assert await tm.store.head() == 0
        task = await tm.launch("x", input={"rows": [1, 2.5, "three", None, True]})
        assert task.input == {"rows": [1, 2.5, "three", None, True]}


async def test_not_before_delays_the_start(db_path: str) -> None:
    """A task launched with not_before (seconds from now) starts once that time came."""
    clock = FakeClock()
    async with manager(db_path, clock=clock, poll_interval=1.0) as tm:
        tm.register("echo", echo)
        task = await tm.launch("echo", "later", not_before=25)
        assert task.not_before == clock.time() + 25
        for _ in range(2):
            await clock.advance(10)
            await tm.tick()
        assert (await tm.get_task(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]
        await clock.advance(10)
        await tm.tick()
        done = await finished(tm, task.id)
        assert done.state is TaskState.COMPLETED
        assert done.started_at is not None
        assert done.started_at.timestamp() >= task.created_at.timestamp() + 25


async def test_a_cancel_request_is_never_lost_to_a_late_start(db_path: str) -> None:
    """A cancel recorded by another process while an attempt runs here ends it cancelled."""
    blocked = Blocked()
    async with manager(db_path) as tm:
        tm.register("slow", blocked)
        task = await tm.launch("slow")
        await blocked.event(task.id).wait()
        async with AsyncClient(db_path) as other:  # another process's view
            requested = await other.cancel(task.id, actor="user:zed", reason="not needed")
        assert requested.cancel_requested and not requested.is_terminal
        done = await finished(tm, task.id)
    assert done.state is TaskState.CANCELLED
    kinds = [type(e.payload) for e in await _history(db_path, task.id)]
    assert kinds.index(CancelRequested) < kinds.index(TaskCancelled)


async def _history(db_path: str, task_id: str) -> list[Any]:
    async with AsyncClient(db_path) as client:
        return await client.history(task_id)


async def test_a_store_that_cannot_signal_never_makes_the_watch_spin(tmp_path: Path) -> None:
    """When the store's change signal fails (busy, damaged), the waiters' watch waits out a
    poll interval instead of asking again at once."""
    clock = FakeClock()
    async with AsyncClient(tmp_path / "t.db", clock=clock, poll_interval=1.0) as client:
        calls = 0

        async def broken(timeout: float) -> None:
            nonlocal calls
            calls += 1
            raise StorageError("the store cannot tell")

        client.store.wait_for_change = broken  # type: ignore[method-assign]
        task = await client.launch("nobody")
        waiting = asyncio.ensure_future(client.wait(task.id))
        for _ in range(200):
            await asyncio.sleep(0)
        assert calls <= 2
        await clock.advance(1.0)
        for _ in range(200):
            await asyncio.sleep(0)
        assert calls <= 3
        waiting.cancel()


async def test_a_commit_of_another_process_wakes_even_beside_this_ones(tmp_path: Path) -> None:
    """SQLite: another connection's commit, made right after one of this store's own, is
    still seen as another's (it wakes wait_for_change, not the hour-long timeout)."""
    path = tmp_path / "t.db"
    async with SQLiteEventStore(path) as mine, SQLiteEventStore(path) as theirs:
        for round_ in range(5):
            waiting = asyncio.ensure_future(mine.wait_for_change(3600))
            await mine.append(f"mine-{round_}", [NewEvent(TaskCreated(agent="a"))])
            await theirs.append(f"theirs-{round_}", [NewEvent(TaskCreated(agent="a"))])
            async with asyncio.timeout(60):  # a hang guard: the slow path waits an hour
                await waiting


STUBBORN_SCRIPT = """
import asyncio, sys
from tasktrail import TaskManager

async def stubborn(ctx):
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # swallowed, for ever

async def main():
    async with TaskManager(sys.argv[1], poll_interval=0.02, cancel_grace=0.1) as tm:
        tm.register("stubborn", stubborn)
        task = await tm.launch("stubborn")
        while (await tm.get_task(task.id)).state.value != "running":
            await asyncio.sleep(0.01)
        print((await tm.cancel(task.id)).state.value)

asyncio.run(main())
print("exited")
"""


def test_a_program_with_an_abandoned_runner_still_exits(tmp_path: Path) -> None:
    """asyncio.run() returns although an abandoned runner swallows every cancel."""
    done = subprocess.run(
        [sys.executable, "-c", STUBBORN_SCRIPT, str(tmp_path / "t.db")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cancelled", "exited"]


async def test_a_thread_runner_gets_its_grace_and_can_clean_up(db_path: str) -> None:
    """A plain def runner sees the cancel, may write its last words within the grace, and
    the task ends cancelled with them in its output."""
    started = threading.Event()

    def polite(ctx: RunContext) -> str:
        started.set()
        while not ctx.cancel_requested:
            time.sleep(0.01)
        ctx.write_sync("cleaned up\n")
        return "stopped"

    async with manager(db_path, cancel_grace=30) as tm:
        tm.register("polite", polite)
        task = await tm.launch("polite")
        await asyncio.to_thread(started.wait, 30)
        after = await tm.cancel(task.id)
        assert after.state is TaskState.CANCELLED
        assert await tm.get_output(task.id) == "cleaned up\n"
