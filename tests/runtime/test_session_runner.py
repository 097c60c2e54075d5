"""AgentSessionRunner under a real TaskManager, driven by the ScriptedSession fake client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tasktrail import (
    AgentSessionRunner,
    InvalidInputError,
    SessionFailedError,
    Task,
    TaskManager,
    TaskState,
)
from tasktrail.testing import ScriptedReply, ScriptedSession

TIMEOUT = 10.0


@asynccontextmanager
async def manager(
    db_path: str, client: ScriptedSession, *, poll_interval: float = 60.0
) -> AsyncIterator[tuple[TaskManager, AgentSessionRunner]]:
    """A manager with an ``agent`` runner on ``client``, its events subscribed.

    The runner polls every ``poll_interval`` seconds: the default is longer than any
    test, so only pushed events can end a session unless a test asks for polling.
    """
    runner = AgentSessionRunner(client, poll_interval=poll_interval)
    client.subscribe(runner.handle_session_status)
    async with TaskManager(db_path, poll_interval=0.05) as tm:
        tm.register("agent", runner)
        yield tm, runner


async def running(tm: TaskManager, task_id: str) -> Task:
    """Wait until the task is running (its session exists and got the prompt)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        task = await tm.get_task(task_id)
        assert task is not None
        if task.state is TaskState.RUNNING:
            return task
        assert time.monotonic() < deadline, f"task {task_id} did not start: {task}"
        await asyncio.sleep(0.02)


def polls(client: ScriptedSession) -> int:
    """How often the client was asked for a status."""
    return sum(1 for method, _ in client.calls if method == "get_status")


async def test_pushed_status_completes_the_task(db_path: str) -> None:
    """A pushed ``idle`` status ends the wait; the session's result is the task's."""
    client = ScriptedSession({"summarise": ScriptedReply(result={"summary": "short"})})
    async with manager(db_path, client) as (tm, _):
        task = await tm.launch("agent", "summarise")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.COMPLETED
    assert done.result == {"summary": "short"}
    assert done.session_id == "ses_1"
    assert polls(client) == 0
    assert client.calls == [
        ("create_session", "ses_1"),
        ("send_prompt", "ses_1"),
        ("get_result", "ses_1"),
    ]


async def test_polling_completes_the_task_without_events(db_path: str) -> None:
    """With no pushed event, polling finds the session done after its busy polls."""
    client = ScriptedSession({"count": ScriptedReply(result=3, polls=2, push=False)})
    async with manager(db_path, client, poll_interval=0.01) as (tm, _):
        task = await tm.launch("agent", "count")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.COMPLETED
    assert done.result == 3
    assert polls(client) == 3  # running, running, idle


@pytest.mark.parametrize(
    ("push", "poll_interval"),
    [pytest.param(True, 60.0, id="pushed"), pytest.param(False, 0.01, id="polled")],
)
async def test_error_status_fails_the_task_with_its_text(
    db_path: str, push: bool, poll_interval: float
) -> None:
    """An ``error`` status fails the task with the session's error text."""
    client = ScriptedSession({"go": ScriptedReply(error="model overloaded", push=push)})
    async with manager(db_path, client, poll_interval=poll_interval) as (tm, _):
        task = await tm.launch("agent", "go")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.FAILED
    assert done.error == (
        "SessionFailedError: agent session 'ses_1' ended with status 'error': model overloaded"
    )
    assert ("abort", "ses_1") not in client.calls


async def test_seed_session_error_event_fails_the_task(db_path: str) -> None:
    """The seeds' ``session.error`` event, with a nested message, fails the task."""
    client = ScriptedSession(default=ScriptedReply(hang=True))
    async with manager(db_path, client) as (tm, runner):
        task = await tm.launch("agent", "anything")
        started = await running(tm, task.id)
        event = {
            "type": "session.error",
            "properties": {
                "sessionID": started.session_id,
                "error": {"name": "APIError", "data": {"message": "rate limited"}},
            },
        }
        assert runner.handle_session_status(event) is True
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.FAILED
    assert (done.error or "").endswith("status 'error': rate limited")


async def test_busy_events_keep_waiting_and_foreign_events_are_ignored(db_path: str) -> None:
    """A ``busy`` status keeps the task running; events of other sessions change nothing."""
    client = ScriptedSession(default=ScriptedReply(result="late", hang=True))
    async with manager(db_path, client) as (tm, runner):
        task = await tm.launch("agent", "anything")
        started = await running(tm, task.id)
        sid = started.session_id
        assert runner.handle_session_status(
            {"type": "session.status", "properties": {"sessionID": sid, "status": {"type": "busy"}}}
        )
        other = {"type": "session.status", "properties": {"sessionID": "ses_9", "status": "idle"}}
        assert runner.handle_session_status(other) is False
        assert runner.handle_session_status({"type": "message.updated", "properties": {}}) is False
        await asyncio.sleep(0.1)
        still = await tm.get_task(task.id)
        assert still is not None and still.state is TaskState.RUNNING
        client.push(sid or "", "idle")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.COMPLETED
    assert done.result == "late"


async def test_cancel_aborts_the_session(db_path: str) -> None:
    """Cancelling a running task aborts its session and ends ``cancelled``."""
    client = ScriptedSession(default=ScriptedReply(hang=True))
    async with manager(db_path, client) as (tm, _):
        task = await tm.launch("agent", "work forever")
        started = await running(tm, task.id)
        await tm.cancel(task.id)
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.CANCELLED
    assert started.session_id is not None
    assert client.sessions[started.session_id].aborted
    assert client.calls[-1] == ("abort", started.session_id)


async def test_client_failure_fails_the_task_and_aborts_the_session(db_path: str) -> None:
    """When sending the prompt raises, the attempt fails and the session is aborted."""
    client = ScriptedSession(default=None)
    async with manager(db_path, client) as (tm, _):
        task = await tm.launch("agent", "unscripted")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.FAILED
    assert (done.error or "").startswith("KeyError: ")
    assert client.calls == [
        ("create_session", "ses_1"),
        ("send_prompt", "ses_1"),
        ("abort", "ses_1"),
    ]


def test_session_failed_error_keeps_its_facts() -> None:
    """``SessionFailedError`` keeps the session id, status and detail as attributes."""
    err = SessionFailedError("ses_1", "error", "boom")
    assert (err.session_id, err.status, err.detail) == ("ses_1", "error", "boom")
    assert str(err) == "agent session 'ses_1' ended with status 'error': boom"


@pytest.mark.parametrize("interval", [0, -1.0, "2"])
def test_poll_interval_must_be_positive(interval: Any) -> None:
    """A poll interval that is not a positive number is refused."""
    with pytest.raises(InvalidInputError):
        AgentSessionRunner(ScriptedSession(), poll_interval=interval)
