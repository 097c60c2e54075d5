"""What the pages show of tasks, events and workers, as plain data.

The same dicts fill the server-rendered templates and the live updates the page's script
applies, so a row looks the same whether it came with the page or a second later. Every
value from the log stays text here: the templates escape it, the script sets it with
``textContent``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from tasktrail.events import OutputAppended, RecordedEvent
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime._recovery import Identity, owner_is_dead
from tasktrail.store._workers import WorkerInfo
from tasktrail.ui._timeline import Timeline

__all__ = [
    "LEASE",
    "TITLE_LENGTH",
    "changed_fields",
    "clock",
    "duration",
    "event_row",
    "output_of",
    "short_type",
    "task_fields",
    "task_header",
    "task_row",
    "value_text",
    "worker_row",
]

TITLE_LENGTH: Final = 120
DETAIL_LENGTH: Final = 300
LEASE: Final = 30.0
"""Seconds in which a worker's heartbeat did not change after which the page calls it dead
(the default ``lease_timeout`` of a worker; then another worker recovers its tasks)."""
_HIDDEN: Final = frozenset({"version", "updated_at"})
_TIMES: Final = frozenset({"not_before"})
"""Payload fields that hold unix seconds."""


def clock(moment: datetime | float | None, *, with_date: bool = True) -> str:
    """A moment as local time, to the millisecond (``-`` for none)."""
    if moment is None:
        return "-"
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    local = moment.astimezone()
    text = local.strftime("%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f")
    return text[:-3]


def duration(seconds: float | None) -> str:
    """A duration as a person reads it: ``850 ms``, ``4.2 s``, ``3 min 05 s``, ``2 h 04 min``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def short_type(event_type: str) -> str:
    """``task.cancel_requested`` as ``cancel requested``."""
    return event_type.removeprefix("task.").replace("_", " ")


def value_text(value: Any) -> str:
    """A field's value as text: str as is, times local, the rest as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return clock(value)
    if isinstance(value, TaskState):
        return value.value
    return json.dumps(msgspec.to_builtins(value), ensure_ascii=False)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def title(task: Task) -> str:
    """One line naming a task: its description, else the first line of its prompt."""
    if task.description:
        return _clip(task.description, TITLE_LENGTH)
    lines = task.prompt.strip().splitlines()
    return _clip(lines[0], TITLE_LENGTH) if lines else "(no prompt)"


def task_row(task: Task) -> dict[str, Any]:
    """A task as one row of the list."""
    run = None
    if task.started_at is not None:
        end = task.finished_at or datetime.now(UTC)
        run = (end - task.started_at).total_seconds()
    return {
        "id": task.id,
        "state": task.state.value,
        "cancel_requested": task.cancel_requested and not task.is_terminal,
        "agent": task.agent,
        "attempt": f"{task.attempt}/{task.max_attempts}",
        "worker": task.worker_id or "-",
        "created": clock(task.created_at),
        "created_ts": task.created_at.timestamp(),
        "ran": duration(run) if run is not None else "-",
        "title": title(task),
        "parent_id": task.parent_id,
    }


def task_header(task: Task, timeline: Timeline, now: float) -> dict[str, Any]:
    """The facts at the top of a task's page."""
    return {
        **task_row(task),
        "version": task.version,
        "terminal": task.is_terminal,
        "started": clock(task.started_at),
        "finished": clock(task.finished_at),
        "updated": clock(task.updated_at),
        "queued_for": duration(timeline.queued(now)),
        "ran_for": duration(timeline.ran(now)) if task.attempt else "-",
        "error": task.error,
        "exit_code": task.exit_code,
        "reason": task.reason,
        "result": None if task.result is None else value_text(task.result),
        "rerun_of": task.rerun_of,
    }


def event_details(event: RecordedEvent) -> str:
    """The payload's fields that differ from their defaults, as ``key=value`` text."""
    if isinstance(event.payload, OutputAppended):
        channel = "" if event.payload.channel == "stdout" else f"[{event.payload.channel}] "
        return _clip(channel + event.payload.text, DETAIL_LENGTH)
    parts = []
    for spec in msgspec.structs.fields(event.payload):
        value = getattr(event.payload, spec.name)
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        if value != default:
            shown = clock(value) if spec.name in _TIMES and value is not None else value_text(value)
            parts.append(f"{spec.name}={shown}")
    return _clip(" ".join(parts), DETAIL_LENGTH)


def event_row(event: RecordedEvent) -> dict[str, Any]:
    """An event as one row of the event table."""
    return {
        "seq": event.sequence,
        "version": event.version,
        "time": clock(event.timestamp),
        "type": short_type(event.type),
        "kind": event.type.removeprefix("task."),
        "actor": event.actor,
        "reason": event.reason or "",
        "details": event_details(event),
    }


def output_of(events: Iterable[RecordedEvent]) -> list[tuple[str, str]]:
    """(channel, text) of every output event, in order."""
    return [
        (e.payload.channel, e.payload.text) for e in events if isinstance(e.payload, OutputAppended)
    ]


def task_fields(task: Task) -> list[tuple[str, str]]:
    """Every field of a task as (name, text), for the replay."""
    return [(name, value_text(value)) for name, value in msgspec.structs.asdict(task).items()]


def changed_fields(before: Task | None, after: Task) -> list[str]:
    """The fields an event changed (every field set, for the first event)."""
    now = msgspec.structs.asdict(after)
    if before is None:
        return [k for k, v in now.items() if k not in _HIDDEN and v not in (None, "", {}, 0)]
    then = msgspec.structs.asdict(before)
    return [k for k, v in now.items() if k not in _HIDDEN and then[k] != v]


def worker_row(
    worker: WorkerInfo, now: float, running: int, *, silent_for: float, here: Identity
) -> dict[str, Any]:
    """A worker as one row of the workers table, judged as recovery judges it: dead once
    its process is gone (seen from its own host, pid namespace and boot), or after
    ``LEASE`` seconds in which this dashboard saw its heartbeat not change
    (``silent_for``). ``now`` (wall clock) only dates the last heartbeat."""
    silent = now - worker.heartbeat_at
    why = owner_is_dead(worker, silent_for=silent_for, lease_timeout=LEASE, here=here)
    if worker.stopped_at is not None:
        status = "stopped"
    elif why is None:
        status = "alive"
    else:
        status = "dead"
    return {
        "id": worker.worker_id,
        "host": worker.host,
        "pid": worker.pid,
        "status": status,
        "started": clock(worker.started_at),
        "heartbeat": clock(worker.heartbeat_at),
        "heartbeat_ts": worker.heartbeat_at,
        "heartbeat_age": duration(max(0.0, silent)),
        "stopped": clock(worker.stopped_at),
        "running": running,
        "why": why if status == "dead" else "",
        "agents": ", ".join(worker.agents) if worker.agents else "-",
    }


def minute_chart(counts: dict[tuple[int, str], int], minutes: int = 60) -> list[dict[str, int]]:
    """Finished tasks per minute, oldest minute first, by outcome."""
    return [
        {state: counts.get((minute, state), 0) for state in ("completed", "failed", "cancelled")}
        for minute in range(minutes)
    ]
