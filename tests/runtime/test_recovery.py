"""Crash recovery: tasks of a dead owner get an explicit, logged decision, in-process and across
real OS processes (SIGKILL), and a cancel crosses processes sharing one database; on SQLite and
on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from runtime_helpers import echo

from helpers import finished
from helpers import open_manager as manager
from tasktrail import (
    CancelRequested,
    EventStore,
    NewEvent,
    RunContext,
    Task,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskManager,
    TaskRequeued,
    TaskStarted,
    TaskState,
    open_store,
)
from tasktrail.runtime._recovery import pid_exists
from tasktrail.testing import FakeClock

HOST = socket.gethostname()


def dead_pid() -> int:
    """The id of a process of this host that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


async def orphan(
    store: EventStore, task_id: str, worker_id: str, *, max_attempts: int = 1, **created: Any
) -> Task:
    """A task claimed and started by ``worker_id``, as a worker that then died leaves it."""
    events = [
        NewEvent(TaskCreated(agent="agent", max_attempts=max_attempts, **created), actor="user"),
        NewEvent(TaskClaimed(worker_id=worker_id, attempt=1), actor=worker_id),
        NewEvent(TaskStarted(), actor=worker_id),
    ]
    return (await store.append(task_id, events, expected_version=0)).task


# -- in one process ---------------------------------------------------------------------------


async def test_task_of_vanished_process_is_requeued_while_attempts_remain(db_path: str) -> None:
    """A running task whose worker process is gone is re-queued on open, with a reason."""
    async with open_store(db_path) as store:
        await store.register_worker("ghost", host=HOST, pid=dead_pid())
        await orphan(store, "t1", "ghost", max_attempts=2)
    async with manager(db_path) as tm:
        history = await tm.history("t1")
        decision = history[-1]
        assert isinstance(decision.payload, TaskRequeued)
        assert decision.actor == "system"
        assert decision.reason is not None
        assert "recovery" in decision.reason
        assert "ghost" in decision.reason
        assert (await tm.get_task("t1")).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_requeued_task_runs_again_in_the_new_manager(db_path: str) -> None:
    """After recovery the re-queued task is claimed again (attempt 2) and completes."""
    async with open_store(db_path) as store:
        await store.register_worker("ghost", host=HOST, pid=dead_pid())
        await orphan(store, "t1", "ghost", max_attempts=2, prompt="second life")
    async with manager(db_path) as tm:
        tm.register("agent", echo)
        done = await finished(tm, "t1")
        assert (done.state, done.result, done.attempt) == (TaskState.COMPLETED, "second life", 2)
        kinds = [type(e.payload) for e in await tm.history("t1")]
        assert kinds == [
            TaskCreated, TaskClaimed, TaskStarted, TaskRequeued,
            TaskClaimed, TaskStarted, TaskCompleted,
        ]  # fmt: skip


async def test_task_of_vanished_process_fails_without_attempts_left(db_path: str) -> None:
    """A task of a dead worker with no attempts left fails, with a reason; never cancelled."""
    async with open_store(db_path) as store:
        await store.register_worker("ghost", host=HOST, pid=dead_pid())
        await orphan(store, "t1", "ghost", max_attempts=1)
    async with manager(db_path) as tm:
        tm.register("agent", echo)
        done = await finished(tm, "t1")
        assert done.state is TaskState.FAILED
        assert done.error
        assert done.reason is not None
        assert "recovery" in done.reason
        decision = (await tm.history("t1"))[-1]
        assert isinstance(decision.payload, TaskFailed)
        assert decision.actor == "system"


async def test_cancel_requested_before_the_crash_is_acknowledged(db_path: str) -> None:
    """A task of a dead worker with a cancel requested ends cancelled, not re-queued."""
    async with open_store(db_path) as store:
        await store.register_worker("ghost", host=HOST, pid=dead_pid())
        task = await orphan(store, "t1", "ghost", max_attempts=3)
        await store.append("t1", [NewEvent(CancelRequested())], expected_version=task.version)
    async with manager(db_path) as tm:
        done = await finished(tm, "t1")
        assert done.state is TaskState.CANCELLED
        assert done.reason is not None
        assert "recovery" in done.reason


async def test_task_of_unknown_worker_is_recovered(db_path: str) -> None:
    """A task claimed by a worker that never registered is recovered at once."""
    async with open_store(db_path) as store:
        await orphan(store, "t1", "never-registered", max_attempts=2)
    async with manager(db_path) as tm:
        assert (await tm.get_task("t1")).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_task_of_cleanly_stopped_worker_is_recovered(db_path: str) -> None:
    """A task left starting/running by a worker that recorded its stop is recovered at once."""
    async with open_store(db_path) as store:
        await store.register_worker("gone", host="another-host", pid=1)
        await orphan(store, "t1", "gone", max_attempts=2)
        await store.stop_worker("gone")
    async with manager(db_path) as tm:
        assert (await tm.get_task("t1")).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_own_worker_id_after_restart_recovers_its_tasks(db_path: str) -> None:
    """A manager reopened with the same worker id re-queues what its earlier life left running."""
    async with open_store(db_path) as store:
        await store.register_worker("fixed-id", host=HOST, pid=os.getpid())
        await orphan(store, "t1", "fixed-id", max_attempts=2, prompt="again")
    async with manager(db_path, worker_id="fixed-id") as tm:
        requeue = next(e for e in await tm.history("t1") if isinstance(e.payload, TaskRequeued))
        assert requeue.reason is not None
        assert "recovery" in requeue.reason
        tm.register("agent", echo)
        assert (await finished(tm, "t1")).result == "again"


async def test_live_workers_tasks_are_left_alone(db_path: str) -> None:
    """A task of another live worker (fresh heartbeat) is not recovered."""
    clock = FakeClock()
    async with open_store(db_path, clock=clock.time) as store:
        await store.register_worker("remote", host="another-host", pid=1)
        await orphan(store, "t1", "remote", max_attempts=2)
    async with manager(db_path, clock=clock, lease_timeout=30) as tm:
        await clock.advance(20)
        await tm.tick()
        assert await tm.recover() == []
        task = await tm.get_task("t1")
        assert task is not None
        assert (task.state, task.version) == (TaskState.RUNNING, 3)


async def test_pid_of_another_host_is_never_checked_here(db_path: str) -> None:
    """A worker of another host, its pid absent here, keeps its tasks while its lease runs."""
    clock = FakeClock()
    async with open_store(db_path, clock=clock.time) as store:
        await store.register_worker("remote", host="another-host", pid=dead_pid())
        await orphan(store, "t1", "remote", max_attempts=2)
    async with manager(db_path, clock=clock, lease_timeout=30) as tm:
        assert await tm.recover() == []
        task = await tm.get_task("t1")
        assert task is not None
        assert (task.state, task.worker_id) == (TaskState.RUNNING, "remote")


async def test_lease_timeout_recovers_tasks_of_silent_worker(db_path: str) -> None:
    """A remote worker silent for longer than lease_timeout loses its tasks to recovery."""
    clock = FakeClock()
    async with open_store(db_path, clock=clock.time) as store:
        await store.register_worker("remote", host="another-host", pid=1)
        await orphan(store, "t1", "remote", max_attempts=2)
    async with manager(db_path, clock=clock, lease_timeout=30) as tm:
        await clock.advance(29)
        await tm.tick()
        assert (await tm.get_task("t1")).state is TaskState.RUNNING  # type: ignore[union-attr]
        await clock.advance(16)  # the next recovery round, past the lease
        await tm.tick()  # the manager's own loop may run this round: wait for its decision
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            while (task := await tm.get_task("t1")) is not None and task.state is not (
                TaskState.PENDING
            ):
                await tm.store.wait_for_commit(0.02)
        assert task is not None
        assert task.state is TaskState.PENDING
        assert task.reason is not None
        assert "recovery" in task.reason
        assert "heartbeat" in task.reason


async def test_heartbeats_keep_a_remote_worker_alive(db_path: str) -> None:
    """A remote worker that keeps sending heartbeats keeps its tasks past lease_timeout."""
    clock = FakeClock()
    async with open_store(db_path, clock=clock.time) as store:
        await store.register_worker("remote", host="another-host", pid=1)
        await orphan(store, "t1", "remote", max_attempts=2)
        async with manager(db_path, clock=clock, lease_timeout=30) as tm:
            for _ in range(6):
                await clock.advance(20)
                await store.heartbeat("remote")
                await tm.tick()
                await tm.recover()
            assert (await tm.get_task("t1")).state is TaskState.RUNNING  # type: ignore[union-attr]


async def test_recover_leaves_this_managers_claim_in_flight_alone(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover() while this live manager's own claim is being recorded decides nothing."""
    claimed = asyncio.Event()
    release = asyncio.Event()
    attempts: list[int] = []

    async def record(ctx: RunContext) -> str:
        attempts.append(ctx.attempt)
        return "ran once"

    async with manager(db_path) as tm:
        real_claim = tm.store.claim

        async def claim(request: Any) -> Any:
            result = await real_claim(request)
            if result.tasks and not release.is_set():
                claimed.set()  # committed, but the manager has not seen the answer yet
                await release.wait()
            return result

        monkeypatch.setattr(tm.store, "claim", claim)
        tm.register("agent", record)
        task = await tm.launch("agent", max_attempts=2)
        await claimed.wait()
        recovering = asyncio.ensure_future(tm.recover())  # waits for the claim's answer
        release.set()
        decided = await recovering
        assert decided == []
        done = await finished(tm, task.id)
        assert (done.state, done.result, done.attempt) == (TaskState.COMPLETED, "ran once", 1)
        assert attempts == [1]


async def test_recovery_decides_once_with_two_managers(db_path: str) -> None:
    """Two managers recovering the same orphan at once record exactly one decision."""
    async with open_store(db_path) as store:
        await store.register_worker("ghost", host=HOST, pid=dead_pid())
        await orphan(store, "t1", "ghost", max_attempts=2)
    async with manager(db_path, run_tasks=False) as cli:
        first = TaskManager(db_path, poll_interval=0.02)
        second = TaskManager(db_path, poll_interval=0.02)
        await asyncio.gather(first.__aenter__(), second.__aenter__())
        try:
            requeues = [e for e in await cli.history("t1") if isinstance(e.payload, TaskRequeued)]
            assert len(requeues) == 1
        finally:
            await asyncio.gather(first.close(), second.close())
        assert await cli.store.check_projection() == []


# -- real OS processes ------------------------------------------------------------------------

WORKER = """
import asyncio, sys
from tasktrail import TaskManager

async def main(database, worker_id):
    async def slow(ctx):
        print("claimed", ctx.task.id, ctx.attempt, flush=True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print("stopped", ctx.task.id, flush=True)
            raise

    async with TaskManager(database, poll_interval=0.02, worker_id=worker_id) as tm:
        tm.register("slow", slow)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # run until stdin closes

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Worker:
    """A worker in its own OS process, running ``WORKER`` on the test's database."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, db_path: str, worker_id: str) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, str(db_path), worker_id,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        worker = cls(proc)
        assert await worker.line() == ["ready"]
        return worker

    async def line(self) -> list[str]:
        """The next line the worker prints, split into words."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):  # a hang guard, not a timing claim
            raw = await self.proc.stdout.readline()
        assert raw, f"the worker exited (code {await self.proc.wait()})"
        return raw.decode().split()

    async def kill(self) -> None:
        """SIGKILL, and reap it so its pid is really gone."""
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        """Close its stdin and let it shut down cleanly."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(20):  # a hang guard, not a timing claim
            return await self.proc.wait()


async def test_tasks_of_killed_worker_process_are_recovered(db_path: str) -> None:
    """SIGKILL a worker mid-task: a new manager re-queues its tasks, runs them, the log verifies."""
    async with manager(db_path, run_tasks=False) as cli:
        tasks = [await cli.launch("slow", f"job {i}", max_attempts=2) for i in range(2)]
    worker = await Worker.start(db_path, "doomed")
    try:
        claimed = {tuple((await worker.line())[:3]) for _ in tasks}
        assert claimed == {("claimed", t.id, "1") for t in tasks}
    finally:
        await worker.kill()
    async with manager(db_path) as tm:
        for task in tasks:
            mid = await tm.get_task(task.id)
            assert mid is not None
            assert mid.state is TaskState.PENDING
        tm.register("slow", echo)
        for task in tasks:
            done = await finished(tm, task.id)
            assert (done.state, done.result, done.attempt) == (
                TaskState.COMPLETED, task.prompt, 2,
            )  # fmt: skip
            history = await tm.history(task.id)
            kinds = [type(e.payload) for e in history]
            assert kinds == [
                TaskCreated, TaskClaimed, TaskStarted, TaskRequeued,
                TaskClaimed, TaskStarted, TaskCompleted,
            ]  # fmt: skip
            assert history[1].payload.worker_id == "doomed"
            requeue = history[3]
            assert requeue.actor == "system"
            assert requeue.reason is not None
            assert "recovery" in requeue.reason
            assert history[4].payload.worker_id == tm.worker_id
        report = await tm.verify()
        assert report.events == 14
        assert await tm.store.check_projection() == []


async def test_killed_worker_task_without_attempts_left_fails(db_path: str) -> None:
    """SIGKILL a worker running a single-attempt task: recovery fails it, with a reason."""
    async with manager(db_path, run_tasks=False) as cli:
        task = await cli.launch("slow", max_attempts=1)
    worker = await Worker.start(db_path, "doomed")
    try:
        assert (await worker.line())[:2] == ["claimed", task.id]
    finally:
        await worker.kill()
    async with manager(db_path) as tm:
        done = await finished(tm, task.id)
        assert done.state is TaskState.FAILED
        assert done.reason is not None
        assert "recovery" in done.reason
        assert (await tm.verify()).events == 4
        assert await tm.store.check_projection() == []


async def test_cancel_from_another_process_stops_the_runner(db_path: str) -> None:
    """A cancel requested by a non-running manager stops the runner in the worker process."""
    async with manager(db_path, run_tasks=False) as cli:
        worker = await Worker.start(db_path, "busy")
        try:
            task = await cli.launch("slow", max_attempts=3)
            assert (await worker.line())[:2] == ["claimed", task.id]
            requested = await cli.cancel(task.id)
            assert requested.cancel_requested or requested.state is TaskState.CANCELLED
            assert await worker.line() == ["stopped", task.id]
            done = await finished(cli, task.id)
            assert done.state is TaskState.CANCELLED
            assert "task.requeued" not in [e.type for e in await cli.history(task.id)]
        finally:
            assert await worker.stop() == 0
        assert await cli.store.check_projection() == []


async def test_worker_process_shutdown_requeues_and_nothing_stays_running(db_path: str) -> None:
    """A worker process that shuts down cleanly mid-task leaves the task pending for others."""
    async with manager(db_path, run_tasks=False) as cli:
        worker = await Worker.start(db_path, "leaving")
        task = await cli.launch("slow")
        assert (await worker.line())[:2] == ["claimed", task.id]
        assert await worker.stop() == 0
        after = await cli.get_task(task.id)
        assert after is not None
        assert after.state is TaskState.PENDING
        assert await cli.list_tasks(TaskState.RUNNING) == []


def test_a_zombie_owner_counts_as_gone() -> None:
    """A killed worker that nobody reaped yet (a zombie) is dead at once, not after its lease."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_exists(child.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while pid_exists(child.pid):  # a zombie until wait() below reaps it
            assert time.monotonic() < deadline, "the killed child still counts as alive"
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert not pid_exists(child.pid)


# -- a log written while a clock was ahead -----------------------------------------------------

FUTURE = 4_070_908_800.0  # 2099-01-01


async def test_a_backoff_written_while_the_clock_was_ahead_does_not_freeze_the_task(
    db_path: str,
) -> None:
    """A retry whose not_before lies in 2099 because it was written then starts now."""
    ahead = FakeClock(start=FUTURE)
    async with open_store(db_path, clock=ahead.time) as store:
        await orphan(store, "t1", "w-ahead", max_attempts=3, prompt="again")
        await store.append("t1", [NewEvent(TaskRequeued(not_before=FUTURE + 2.0), actor="w-ahead")])
    async with manager(db_path) as tm:  # this process's clock is right
        tm.register("agent", echo)
        done = await finished(tm, "t1")
        assert (done.state, done.attempt, done.result) == (TaskState.COMPLETED, 2, "again")


async def test_a_heartbeat_from_the_future_does_not_keep_a_dead_worker_alive(
    db_path: str,
) -> None:
    """A worker whose last heartbeat reads 2099 counts as dead once it stays unchanged for a
    lease of the observer's monotonic clock."""
    async with open_store(db_path, clock=lambda: FUTURE) as store:
        await store.register_worker("w-ahead", host="another-host", pid=1)
        await orphan(store, "t1", "w-ahead", max_attempts=2)
    clock = FakeClock()
    async with manager(db_path, clock=clock, lease_timeout=30) as tm:
        assert await tm.recover() == []  # first seen: its lease starts now
        for _ in range(3):
            await clock.advance(11)
            await tm.tick()
        decided = await tm.recover()
        task = await tm.get_task("t1")
        assert task is not None and task.state is TaskState.PENDING, (decided, task)
        assert task.reason is not None and "heartbeat" in task.reason
