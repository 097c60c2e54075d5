"""A task's timeline: spans per phase and lane, marks for the moments, time queued and run."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tasktrail import (
    CancelRequested,
    ChildFinished,
    Event,
    OutputAppended,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.events import EVENT_TAGS
from tasktrail.ui._timeline import Mark, Span, timeline

T0 = 1_767_225_600.0


def history(*steps: tuple[float, Event] | tuple[float, Event, str]) -> list[RecordedEvent]:
    """The recorded events of one task: (seconds after T0, payload[, reason]) each."""
    events = []
    for version, (offset, payload, *reason) in enumerate(steps, start=1):
        events.append(
            RecordedEvent(
                version * 10, f"e{version}", "task", version, EVENT_TAGS[type(payload)],
                payload.schema_version, T0 + offset, "w", reason[0] if reason else None, None,
                payload, "0" * 64,
            )
        )  # fmt: skip
    return events


def spans(events: Sequence[RecordedEvent]) -> list[tuple[str, str, float, float | None]]:
    return [
        (s.lane, s.kind, s.start - T0, None if s.end is None else s.end - T0)
        for s in timeline(events).spans
    ]


def test_a_retried_and_recovered_task_that_was_cancelled() -> None:
    """Queue wait, starting and running per attempt, the recovery decision with its
    backoff, the cancel request and the cancel: each where and when it happened."""
    events = history(
        (0, TaskCreated(agent="a")),
        (2, TaskClaimed(worker_id="w1", attempt=1)),
        (3, TaskStarted(session_id="pid:1")),
        (4, OutputAppended(text="hi\n")),
        (10, TaskRequeued(not_before=T0 + 12), "recovery: worker w1 is gone"),
        (15, TaskClaimed(worker_id="w2", attempt=2)),
        (16, TaskStarted()),
        (17, ChildFinished(child_id="kid", state="completed")),
        (20, CancelRequested(force=False), "stop it"),
        (21, TaskCancelled()),
    )
    line = timeline(events)
    assert line.lanes == ["queue", "attempt 1", "attempt 2"]
    assert spans(events) == [
        ("queue", "pending", 0, 2),
        ("attempt 1", "starting", 2, 3),
        ("attempt 1", "running", 3, 10),
        ("queue", "backoff", 10, 12),
        ("queue", "pending", 12, 15),
        ("attempt 2", "starting", 15, 16),
        ("attempt 2", "running", 16, 21),
    ]
    assert [(m.lane, m.kind, m.at - T0, m.label) for m in line.marks] == [
        ("attempt 1", "recovery", 10, "recovery: worker w1 is gone"),
        ("attempt 2", "child", 17, "child kid completed"),
        ("attempt 2", "cancel", 20, "cancel requested: stop it"),
        ("attempt 2", "cancelled", 21, "cancelled"),
    ]
    assert line.end == T0 + 21
    assert line.queued(now=T0 + 99) == 2 + 2 + 3
    assert line.ran(now=T0 + 99) == 7 + 5
    assert isinstance(line.spans[0], Span)
    assert isinstance(line.marks[0], Mark)


def test_a_running_task_has_an_open_span_counted_up_to_now() -> None:
    """While a task runs, its last span has no end and its time runs up to now."""
    events = history(
        (0, TaskCreated(agent="a")),
        (1, TaskClaimed(worker_id="w1", attempt=1)),
        (1, TaskStarted()),
    )
    line = timeline(events)
    assert line.end is None
    assert spans(events)[-1] == ("attempt 1", "running", 1, None)
    assert line.ran(now=T0 + 5) == 4
    assert line.queued(now=T0 + 5) == 1


@pytest.mark.parametrize(
    ("outcome", "kind", "label"),
    [
        pytest.param(TaskCompleted(result=1), "completed", "completed", id="completed"),
        pytest.param(TaskFailed(error="exit 3"), "failed", "failed: exit 3", id="failed"),
        pytest.param(TaskCancelled(forced=True), "cancelled", "cancelled by force", id="forced"),
    ],
)
def test_the_outcome_closes_the_attempt_and_is_marked(
    outcome: Event, kind: str, label: str
) -> None:
    """The outcome ends the running span and is a mark in its attempt's lane."""
    events = history(
        (0, TaskCreated(agent="a")),
        (1, TaskClaimed(worker_id="w1", attempt=1)),
        (2, TaskStarted()),
        (5, outcome),
    )
    line = timeline(events)
    assert spans(events)[-1] == ("attempt 1", "running", 2, 5)
    assert [(m.lane, m.kind, m.label) for m in line.marks] == [("attempt 1", kind, label)]


def test_a_task_failed_while_queued_never_had_an_attempt() -> None:
    """A task that expired in the queue: one waiting span, the failure in the queue lane."""
    events = history((0, TaskCreated(agent="a")), (30, TaskFailed(error="queue timeout")))
    line = timeline(events)
    assert line.lanes == ["queue"]
    assert spans(events) == [("queue", "pending", 0, 30)]
    assert [(m.lane, m.kind) for m in line.marks] == [("queue", "failed")]
    assert line.ran(now=T0 + 60) == 0


def test_a_timeline_needs_events() -> None:
    """No events, no timeline."""
    with pytest.raises(ValueError, match="needs the task's events"):
        timeline([])


def test_a_scheduled_start_is_drawn_as_a_wait_until_its_time() -> None:
    """A task launched with ``not_before`` waits in the queue until then, then for a
    worker."""
    events = history(
        (0, TaskCreated(agent="a", not_before=T0 + 60)),
        (61, TaskClaimed(worker_id="w1", attempt=1)),
    )
    assert spans(events) == [
        ("queue", "backoff", 0, 60),
        ("queue", "pending", 60, 61),
        ("attempt 1", "starting", 61, None),
    ]
    assert timeline(events).spans[0].label == "scheduled start"
