"""A task's life as spans of time, from its events: what the timeline draws to scale.

Pure and synchronous. One lane for the queue (waiting ``pending``, or a retry's backoff),
one lane per attempt (``starting``, then ``running``), and marks for the moments that are
not spans: a cancel request, a re-queue and the recovery decision behind it, the outcome.
A span still open has no end: the page draws it up to now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from tasktrail.events import (
    CancelRequested,
    ChildFinished,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)

__all__ = ["QUEUE", "Mark", "Span", "Timeline", "timeline"]

QUEUE: Final = "queue"
"""The lane of the time a task waited to start."""


@dataclass(frozen=True)
class Span:
    """A stretch of time a task spent in one phase."""

    lane: str
    kind: str
    """``pending``, ``backoff`` (not before a time: a retry's backoff, a scheduled start),
    ``starting`` or ``running``."""
    start: float
    end: float | None
    """Unix seconds; ``None`` while the phase lasts."""
    label: str = ""
    version: int = 0
    """The version of the event that began it."""


@dataclass(frozen=True)
class Mark:
    """A moment: a cancel request, a re-queue, a notification from a child, the outcome."""

    lane: str
    kind: str
    """``cancel``, ``requeue``, ``recovery``, ``child``, ``completed``, ``failed`` or
    ``cancelled``."""
    at: float
    label: str
    version: int
    sequence: int


@dataclass(frozen=True)
class Timeline:
    """Everything the timeline draws, with the time spent queued and running."""

    start: float
    end: float | None
    """When the task finished; ``None`` while it lives."""
    lanes: list[str]
    spans: list[Span] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def queued(self, now: float) -> float:
        """Seconds spent waiting to start (every wait, backoffs included), up to ``now``."""
        return self._total(("pending", "backoff"), now)

    def ran(self, now: float) -> float:
        """Seconds spent running, over every attempt, up to ``now``."""
        return self._total(("running",), now)

    def _total(self, kinds: tuple[str, ...], now: float) -> float:
        return sum(
            max(0.0, (s.end if s.end is not None else now) - s.start)
            for s in self.spans
            if s.kind in kinds
        )

    def as_json(self) -> dict[str, Any]:
        """The timeline as plain data for the page's script."""
        return asdict(self)


def _attempt(number: int) -> str:
    return f"attempt {number}"


class _Builder:
    def __init__(self) -> None:
        self.lanes = [QUEUE]
        self.spans: list[Span] = []
        self.marks: list[Mark] = []
        self.open: Span | None = None
        self.lane = QUEUE

    def close(self, at: float) -> None:
        if self.open is not None:
            self.spans.append(Span(**{**asdict(self.open), "end": max(at, self.open.start)}))
            self.open = None

    def begin(self, lane: str, kind: str, at: float, label: str, version: int) -> None:
        self.close(at)
        if lane not in self.lanes:
            self.lanes.append(lane)
        self.lane = lane
        self.open = Span(lane, kind, at, None, label, version)

    def wait(self, at: float, not_before: float | None, version: int, why: str) -> None:
        """In the queue: not before ``not_before`` (a backoff, a scheduled start), then
        waiting for a worker."""
        if not_before is not None and not_before > at:
            self.close(at)
            self.spans.append(Span(QUEUE, "backoff", at, not_before, why, version))
            at = not_before
        self.begin(QUEUE, "pending", at, "waiting for a worker", version)

    def mark(self, kind: str, event: RecordedEvent, label: str) -> None:
        self.marks.append(
            Mark(self.lane, kind, event.timestamp, label, event.version, event.sequence)
        )


def timeline(events: Sequence[RecordedEvent]) -> Timeline:
    """The timeline of one task from its events, in order (its whole history)."""
    if not events:
        raise ValueError("a timeline needs the task's events")
    build = _Builder()
    end: float | None = None
    for event in events:
        at = event.timestamp
        match event.payload:
            case TaskCreated(not_before=not_before):
                build.wait(at, not_before, event.version, "scheduled start")
            case TaskClaimed(worker_id=worker_id, attempt=attempt):
                build.begin(_attempt(attempt), "starting", at, worker_id, event.version)
            case TaskStarted(session_id=session_id):
                build.begin(build.lane, "running", at, session_id or "", event.version)
            case TaskRequeued(not_before=not_before):
                reason = event.reason or "re-queued"
                kind = "recovery" if reason.startswith("recovery") else "requeue"
                build.close(at)
                build.mark(kind, event, reason)
                build.wait(at, not_before, event.version, "retry backoff")
            case CancelRequested(force=force):
                label = "cancel requested" + (" (force)" if force else "")
                build.mark("cancel", event, f"{label}: {event.reason}" if event.reason else label)
            case TaskCompleted():
                build.close(at)
                build.mark("completed", event, "completed")
                end = at
            case TaskFailed(error=error):
                build.close(at)
                build.mark("failed", event, f"failed: {error}")
                end = at
            case TaskCancelled(forced=forced):
                build.close(at)
                build.mark("cancelled", event, "cancelled" + (" by force" if forced else ""))
                end = at
            case ChildFinished(child_id=child_id, state=state):
                build.mark("child", event, f"child {child_id} {state}")
            case _:
                pass  # output and progress: drawn by nothing here
    spans = build.spans if build.open is None else [*build.spans, build.open]
    return Timeline(events[0].timestamp, end, build.lanes, spans, build.marks)
