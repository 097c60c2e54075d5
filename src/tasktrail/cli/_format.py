"""How the command line shows tasks and events to a person (``--json`` bypasses this)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from rich.table import Table

from tasktrail.events import RecordedEvent
from tasktrail.projection import Task

__all__ = [
    "STATE_COLOURS",
    "age",
    "changes",
    "event_summary",
    "history_row",
    "history_table",
    "record_table",
    "state",
    "task_table",
    "text",
    "when",
]

STATE_COLOURS: Final = {
    "pending": "white",
    "starting": "blue",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
}
_UNCHANGING: Final = frozenset({"version", "updated_at"})


def state(task: Task) -> str:
    """The task's state in its colour, marked when a cancel is pending."""
    name = task.state.value
    mark = " (cancel requested)" if task.cancel_requested and not task.is_terminal else ""
    return f"[{STATE_COLOURS[name]}]{name}[/]{mark}"


def when(moment: datetime | None, *, short: bool = False) -> str:
    """A timestamp in local time, to the second (``short``: only the time when today)."""
    if moment is None:
        return "-"
    local = moment.astimezone()
    if short and local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def age(moment: datetime, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, e.g. ``3m05s``."""
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def task_table(tasks: Iterable[Task], title: str | None = None) -> Table:
    """A table of tasks, one row each."""
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for column in ("state", "agent", "attempt", "worker", "created", "description"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        table.add_row(
            task.id,
            state(task),
            task.agent,
            f"{task.attempt}/{task.max_attempts}",
            task.worker_id or "-",
            when(task.created_at, short=True),
            task.description or task.prompt[:50],
        )
    return table


def record_table(task: Task) -> Table:
    """Every field of one task, a row each."""
    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in msgspec.structs.asdict(task).items():
        if name == "state":
            table.add_row(name, state(task))
        elif isinstance(value, datetime):
            table.add_row(name, when(value))
        else:
            table.add_row(name, "-" if value is None else text(value))
    return table


def event_summary(event: RecordedEvent) -> str:
    """The payload's fields that differ from their defaults, as ``key=value`` text."""
    parts = []
    for field in msgspec.structs.fields(event.payload):
        value = getattr(event.payload, field.name)
        default = field.default_factory() if callable(field.default_factory) else field.default
        if value != default:
            parts.append(f"{field.name}={text(value)[:60]}")
    return " ".join(parts)


def history_table(events: Iterable[RecordedEvent], title: str | None = None) -> Table:
    """A timeline of events with actor, reason and time."""
    table = Table(title=title)
    for column in ("v", "seq", "time", "event", "actor", "reason", "details"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(*history_row(event))
    return table


def history_row(event: RecordedEvent) -> tuple[str, ...]:
    """One row of :func:`history_table`: short text, whatever the size of the event."""
    return (
        str(event.version),
        str(event.sequence),
        event.recorded_at.astimezone().strftime("%H:%M:%S.%f")[:-3],
        event.type,
        event.actor,
        event.reason or "",
        event_summary(event),
    )


def changes(before: Task | None, after: Task) -> dict[str, Any]:
    """The fields an event changed (all of them for the first event)."""
    now = msgspec.structs.asdict(after)
    if before is None:
        return {k: v for k, v in now.items() if k not in _UNCHANGING and v not in (None, "", {})}
    then = msgspec.structs.asdict(before)
    return {k: v for k, v in now.items() if k not in _UNCHANGING and then[k] != v}


def text(value: Any) -> str:
    """A field's value as a person reads it: str as is, times local, the rest as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return when(value)
    return json.dumps(msgspec.to_builtins(value), ensure_ascii=False)
