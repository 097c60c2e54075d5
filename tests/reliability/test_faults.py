"""Storage faults reach the caller as typed errors and lose nothing acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from scenario import Figures, assert_clean, writer_pragma

from helpers import PATH_TO, finished, new, open_manager
from tasktrail import (
    CancelRequested,
    IllegalTransitionError,
    IncompatibleSchemaError,
    NewEvent,
    OutputAppended,
    RunContext,
    SQLiteEventStore,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TaskCreated,
    TaskExistsError,
    TaskManager,
    TaskState,
    Trigger,
)
from tasktrail._crashpoints import POINTS, set_hook
from tasktrail.store._migrate import migrations


async def test_disk_full_rolls_back_and_recovers(db_path: Path) -> None:
    """A full database raises StorageFullError; acknowledged events stay; space cures it."""
    async with SQLiteEventStore(db_path) as store:
        await store.append("kept", [new(Trigger.CREATE)])
        pages = await writer_pragma(store, "page_count")
        await writer_pragma(store, f"max_page_count = {pages}")
        big = "x" * 200_000
        with pytest.raises(StorageFullError, match="full"):
            await store.append("lost", [NewEvent(TaskCreated(agent="a", prompt=big))])
        assert await store.get_task("lost") is None
        assert await store.head() == 1
        await writer_pragma(store, "max_page_count = 1073741823")
        result = await store.append("later", [NewEvent(TaskCreated(agent="a", prompt=big))])
        assert result.sequence == 2
        assert (await store.verify()).events == 2


async def test_lock_held_too_long_is_busy(db_path: Path) -> None:
    """A lock held past busy_timeout raises StorageBusyError and writes nothing."""
    async with SQLiteEventStore(db_path, busy_timeout=0.2) as store:
        await store.append("t1", [new(Trigger.CREATE)])
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageBusyError, match="locked"):
                await store.append("t2", [new(Trigger.CREATE)])
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        result = await store.append("t2", [new(Trigger.CREATE)])
        assert result.sequence == 2


async def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    """A database path in a directory that does not exist raises StorageError."""
    with pytest.raises(StorageError, match="directory"):
        async with SQLiteEventStore(tmp_path / "no" / "such" / "dir.db"):
            pass


async def test_database_from_the_future_is_refused(db_path: Path) -> None:
    """A file with a newer schema than this tasktrail knows is refused with advice."""
    async with SQLiteEventStore(db_path):
        pass
    with sqlite3.connect(db_path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(IncompatibleSchemaError, match="upgrade tasktrail") as info:
        async with SQLiteEventStore(db_path):
            pass
    assert (info.value.found, info.value.known) == (99, len(migrations()))


# -- faults injected at every write step of a commit (scenario 4) -------------------------

COMMIT_POINTS = [p for p in POINTS if p.startswith("commit.")]
FAULTS: dict[str, tuple[str, type[BaseException]]] = {
    "busy": ("database is locked", StorageBusyError),
    "full": ("database or disk is full", StorageFullError),
    "ioerr": ("disk I/O error", StorageError),
}


def no_lock_held(path: Path) -> bool:
    """Whether another connection can take the write lock at once (no transaction left open)."""
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


@contextlib.contextmanager
def fault_at(point: str, fault: Callable[[], None]) -> Iterator[list[str]]:
    """Run ``fault()`` the first time ``point`` is reached; yields the points reached."""
    reached: list[str] = []

    def hook(name: str) -> None:
        reached.append(name)
        if name == point and reached.count(name) == 1:
            fault()

    old = set_hook(hook)
    try:
        yield reached
    finally:
        set_hook(old)


def batches() -> tuple[list[NewEvent], list[NewEvent]]:
    """Two appends for one commit: a two-event creation, and output with no expected version."""
    created = [new(Trigger.CREATE), NewEvent(CancelRequested())]
    output = [NewEvent(OutputAppended(text="line\n"))]
    return created, output


@pytest.mark.parametrize("fault", [pytest.param(name, id=name) for name in FAULTS])
@pytest.mark.parametrize("point", [pytest.param(p, id=p) for p in COMMIT_POINTS])
async def test_driver_fault_at_every_write_step(
    db_path: Path, point: str, fault: str, figures: Figures
) -> None:
    """A driver error at any write step is typed; a retry of the same events resolves it."""
    text, error_type = FAULTS[fault]
    async with SQLiteEventStore(db_path) as store:
        await store.append("running", [new(t) for t in PATH_TO[TaskState.RUNNING]])
        created, output = batches()

        def raise_fault() -> None:
            raise sqlite3.OperationalError(text)

        with fault_at(point, raise_fault) as reached:
            outcomes = await asyncio.gather(
                store.append("fresh", created, expected_version=0),
                store.append("running", output),
                return_exceptions=True,
            )
        assert point in reached
        for outcome in outcomes:
            assert isinstance(outcome, error_type), outcome
            assert not isinstance(outcome, sqlite3.Error)
            assert isinstance(outcome.__cause__, sqlite3.OperationalError)
        assert no_lock_held(db_path)
        committed = point == "commit.after_commit"  # committed, but the call raised
        assert (await store.get_task("fresh") is not None) is committed
        # The ambiguous outcome is resolved by retrying the very same events.
        first = await store.append("fresh", created, expected_version=0)
        second = await store.append("running", output)
        assert (first.duplicate, second.duplicate) == (committed, committed)
        assert await store.head() == 3 + 3
    acknowledged = [("fresh", 2), ("running", 4)]
    batch = [e.event_id for e in created]
    report = assert_clean(db_path, acknowledged=acknowledged, batches=[batch])
    figures.add("4 injected faults", driver_faults=2, retries=2, duplicates=0, events=report.events)


@pytest.mark.parametrize("point", [pytest.param(p, id=p) for p in COMMIT_POINTS])
async def test_cancelled_append_at_every_write_step(
    db_path: Path, point: str, figures: Figures
) -> None:
    """Cancelling an append at any write step leaves one outcome, found by retrying it."""
    async with SQLiteEventStore(db_path) as store:
        await store.append("running", [new(t) for t in PATH_TO[TaskState.RUNNING]])
        created, output = batches()
        callers: list[asyncio.Task[object]] = []
        with fault_at(point, lambda: callers[0].cancel()) as reached:
            callers.append(asyncio.create_task(store.append("fresh", created, expected_version=0)))
            callers.append(asyncio.create_task(store.append("running", output)))
            outcomes = await asyncio.gather(*callers, return_exceptions=True)
            await store.drain()
        assert point in reached
        assert isinstance(outcomes[0], asyncio.CancelledError)
        assert not isinstance(outcomes[1], BaseException)
        assert no_lock_held(db_path)
        # The cancelled caller does not know whether its events were written: it retries
        # the same events, and the store answers with what happened.
        retry = await store.append("fresh", created, expected_version=0)
        task = await store.get_task("fresh")
        assert task is not None
        assert (task.version, await store.head()) == (2, 6)
        assert (retry.version, retry.duplicate) == (2, True)  # the commit went ahead
    acknowledged = [("fresh", 2), ("running", 4)]
    batch = [e.event_id for e in created]
    report = assert_clean(db_path, acknowledged=acknowledged, batches=[batch])
    figures.add("4 injected faults", cancellations=1, retries=1, events=report.events)


async def test_crash_points_cover_every_write_step(db_path: Path) -> None:
    """An append passes every commit crash point, in order; with no hook, none fires."""
    async with SQLiteEventStore(db_path) as store:
        with fault_at("", lambda: None) as reached:
            await store.append("t", [new(Trigger.CREATE)])
        assert reached == COMMIT_POINTS
        await store.append("u", [new(Trigger.CREATE)])
    assert assert_clean(db_path).events == 2


@pytest.mark.parametrize("step", [pytest.param(2, id="claim"), pytest.param(3, id="outcome")])
@pytest.mark.parametrize("point", [pytest.param(p, id=p) for p in COMMIT_POINTS])
async def test_manager_fault_at_every_write_step(
    db_path: Path, point: str, step: int, figures: Figures
) -> None:
    """A claim or outcome whose commit fails at any step (even after COMMIT) ends right."""
    runs: list[str] = []

    async def work(ctx: RunContext) -> str:
        runs.append(ctx.task.id)
        return "done"

    commits = 0

    def second_commit() -> None:  # commits: 1 the launch, 2 the claim, 3 the outcome
        nonlocal commits
        commits += 1
        if commits == step:
            raise sqlite3.OperationalError("disk I/O error")

    async with open_manager(db_path, lease_timeout=3600) as tm:
        hits: list[str] = []

        def hook(name: str) -> None:
            hits.append(name)
            if name == point:
                second_commit()

        old = set_hook(hook)
        try:
            task = await tm.launch("agent", task_id="claimed")
            tm.register("agent", work)
            done = await finished(tm, task.id)
        finally:
            set_hook(old)
        assert point in hits
        assert (done.state, done.result, done.attempt) == (TaskState.COMPLETED, "done", 1)
        assert runs == ["claimed"]
    assert_clean(db_path, acknowledged=[("claimed", done.version)])
    figures.add("4 injected faults", manager_faults=1)


MANAGER_CALLS: dict[str, Callable[[TaskManager], Awaitable[object]]] = {
    "launch": lambda tm: tm.launch("agent", task_id="target"),
    "cancel-force": lambda tm: tm.cancel("target", force=True),
    "complete": lambda tm: tm.complete_task("target", result="r"),
    "fail": lambda tm: tm.fail_task("target", "no"),
}
OUTCOME = {
    "launch": TaskState.PENDING,
    "cancel-force": TaskState.CANCELLED,
    "complete": TaskState.COMPLETED,
    "fail": TaskState.FAILED,
}


@pytest.mark.parametrize("call", [pytest.param(name, id=name) for name in MANAGER_CALLS])
@pytest.mark.parametrize("point", [pytest.param(p, id=p) for p in COMMIT_POINTS])
async def test_manager_call_cancelled_at_every_write_step(
    db_path: Path, call: str, point: str, figures: Figures
) -> None:
    """A manager call cancelled at any write step has one outcome, found by reading it back."""
    async with open_manager(db_path) as tm:  # no runner: the task stays where calls put it
        if call != "launch":
            await tm.launch("agent", task_id="target")
        callers: list[asyncio.Task[object]] = []
        with fault_at(point, lambda: callers[0].cancel()) as reached:
            callers.append(asyncio.create_task(MANAGER_CALLS[call](tm)))  # type: ignore[arg-type]
            with pytest.raises(asyncio.CancelledError):
                await callers[0]
            await tm.store.drain()
        assert point in reached
        task = await tm.get_task("target")
        assert task is not None
        assert task.state is OUTCOME[call]  # the commit went ahead: read, do not guess
        version = task.version
        if call == "launch":
            with pytest.raises(TaskExistsError):
                await tm.launch("agent", task_id="target")
        elif call == "cancel-force":
            assert (await tm.cancel("target", force=True)).version == version
        else:
            with pytest.raises(IllegalTransitionError):
                await MANAGER_CALLS[call](tm)
        task = await tm.get_task("target")
        assert task is not None
        assert task.version == version  # the retry wrote nothing
    assert_clean(db_path, acknowledged=[("target", version)])
    figures.add("4 injected faults", cancellations=1, retries=1)
