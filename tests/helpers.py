"""Small builders shared by the tests."""

from __future__ import annotations

from tasktrail import (
    CancelRequested,
    Event,
    NewEvent,
    OutputAppended,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
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
