"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tasktrail import (
    CancelRequested,
    Event,
    NewEvent,
    OutputAppended,
    SQLiteEventStore,
    Task,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskManager,
    TaskRequeued,
    TaskStarted,
    TaskState,
    Trigger,
)

# One representative event per trigger.
EVENT_FOR: dict[Trigger, Event] = {
    Trigger.CREATE: TaskCreated(agent="coder", prompt="write tests"),
    Trigger.CLAIM: TaskClaimed(worker_id="worker-1", attempt=1),
    Trigger.START: TaskStarted(session_id="session-1"),
    Trigger.COMPLETE: TaskCompleted(result={"ok": True}),
    Trigger.FAIL: TaskFailed(error="boom"),
    Trigger.CANCEL: TaskCancelled(),
    Trigger.REQUEUE: TaskRequeued(),
    Trigger.REQUEST_CANCEL: CancelRequested(),
    Trigger.ANNOTATE: OutputAppended(text="hello\n"),
}

# The shortest legal path from nothing to each state.
PATH_TO: dict[TaskState, list[Trigger]] = {
    TaskState.PENDING: [Trigger.CREATE],
    TaskState.STARTING: [Trigger.CREATE, Trigger.CLAIM],
    TaskState.RUNNING: [Trigger.CREATE, Trigger.CLAIM, Trigger.START],
    TaskState.COMPLETED: [Trigger.CREATE, Trigger.CLAIM, Trigger.START, Trigger.COMPLETE],
    TaskState.FAILED: [Trigger.CREATE, Trigger.FAIL],
    TaskState.CANCELLED: [Trigger.CREATE, Trigger.CANCEL],
}


def new(trigger: Trigger, **envelope: str) -> NewEvent:
    """A NewEvent carrying the representative event of ``trigger``."""
    return NewEvent(EVENT_FOR[trigger], **envelope)


async def raw_fetch(store: Any, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read by a separate raw connection (sqlite3 or asyncpg), not the store."""
    if isinstance(store, SQLiteEventStore):
        with contextlib.closing(sqlite3.connect(store.path)) as raw:
            return [tuple(row) for row in raw.execute(sql).fetchall()]
    import asyncpg

    conn = await asyncpg.connect(store.url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


@asynccontextmanager
async def open_manager(db_path: Path | str, **settings: Any) -> AsyncIterator[TaskManager]:
    """An open manager polling every 20 ms, closed on exit (a hung close fails the test)."""
    settings.setdefault("poll_interval", 0.02)
    tm = TaskManager(db_path, **settings)
    await tm.__aenter__()
    try:
        yield tm
    finally:
        await closed(tm)


async def closed(tm: TaskManager) -> None:
    """Close ``tm``; fail instead of hanging if close() never returns."""
    try:
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await tm.close()
    except TimeoutError:
        raise AssertionError("TaskManager.close() did not return") from None


async def finished(tm: TaskManager, task_id: str) -> Task:
    """``tm.wait(task_id)``, failing instead of hanging if the task never finishes."""
    try:
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            return await tm.wait(task_id)
    except TimeoutError:
        raise AssertionError(f"task {task_id} never finished") from None


CliRun = Callable[..., tuple[int, str, str]]
"""Invokes the CLI in-process: ``cli(*args, input=None, db=True) -> (code, stdout, stderr)``."""


def json_lines(text: str) -> list[Any]:
    """Each non-empty line of ``text`` decoded as JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def unprivileged(fn: Callable[[], str]) -> str:
    """``fn()`` run without the power to ignore file permissions: as root, in a forked child
    that became the user nobody (HOME=/nonexistent, as for a system user); otherwise in this
    process, whose permissions already apply. Returns what ``fn`` returned."""
    if os.geteuid() != 0:
        return fn()
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, report through the pipe
        code = 1
        try:
            os.close(read)
            os.environ["HOME"] = "/nonexistent"
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write, fn().encode())
            code = 0
        except BaseException as err:
            os.write(write, f"the child failed: {err!r}".encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return answer
