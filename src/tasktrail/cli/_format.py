"""How the command line shows tasks and events to a person (``--json`` bypasses this).

Tables fit the console's width (the terminal's, ``$COLUMNS``, or 160 columns when piped):
ids, states, agents, workers and times never wrap; when the width is short they end in
``…``; the free text (a description, a reason, an event's details) takes the width that is
left, on one line, its newlines shown as ``⏎``. Every value is shown as text, never read as
rich markup (a prompt holding ``[red]`` prints as written).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from tasktrail.events import RecordedEvent
from tasktrail.projection import Task

__all__ = [
    "STATE_COLOURS",
    "Column",
    "FittedTable",
    "age",
    "changes",
    "event_summary",
    "fitted_table",
    "history_row",
    "history_table",
    "one_line",
    "record_table",
    "state",
    "state_text",
    "task_row",
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
_GAP: Final = 3
"""Columns between two cells: the padding on each side and the separator."""
MIN_FREE: Final = 16
"""The narrowest the free-text column gets before optional columns are left out (or a
quarter of the width, if more)."""


def state(task: Task) -> str:
    """The task's state in its colour (rich markup), marked when a cancel is pending."""
    return state_text(task).markup


def state_text(task: Task) -> Text:
    """The task's state as styled text; ``cancelling`` when a cancel is pending."""
    name = task.state.value
    mark = " (cancelling)" if task.cancel_requested and not task.is_terminal else ""
    return Text(name, style=STATE_COLOURS[name]) + Text(mark)


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
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def one_line(value: str, limit: int = 500) -> str:
    """Free text on one line: newlines as ``⏎``, tabs and other control characters as
    spaces, at most ``limit`` characters (the table ellipsizes what does not fit)."""
    value = value[: limit + 1].replace("\r\n", "\n").replace("\n", "⏎")
    return "".join(ch if ch.isprintable() else " " for ch in value)


@dataclass(frozen=True)
class Column:
    """A column of a fitted table."""

    header: str
    cap: int | None = None
    """The widest it gets (``None``: as wide as its content)."""
    floor: int | None = None
    """The narrowest it is made (``None``: one character)."""
    free: bool = False
    """The free-text column: it takes the width that is left."""
    optional: int = 0
    """Left out when the width is short: higher numbers go first (0: always shown)."""
    hard: bool = False
    """Narrowed (down to ``floor``) only when nothing else is left to narrow or leave out."""
    justify: str = "left"


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    *,
    width: int,
    title: str | None = None,
) -> FittedTable:
    """A table of ``rows`` fitted to ``width`` columns: the squeezable columns are
    narrowed to their floor first, then optional columns are left out (highest
    ``optional`` first), and only then are the other columns narrowed."""
    keep = list(range(len(columns)))
    while (widths := _fit(columns, rows, width, keep, last_resort=False)) is None:
        droppable = [i for i in keep if columns[i].optional]
        if not droppable:
            widths = _fit(columns, rows, width, keep, last_resort=True)
            break
        keep.remove(max(droppable, key=lambda i: columns[i].optional))
    assert widths is not None
    return FittedTable(
        [columns[i] for i in keep],
        [widths[i] for i in keep],
        [[_as_text(row[i]) for i in keep] for row in rows],
        title=title,
    )


class FittedTable:
    """A table whose columns have fixed widths: each cell on one line, cut with ``…``.

    Drawn line by line, without rich's general table layout (which costs about 4 ms a row:
    20 s for a listing of 5,000 tasks); it looks like rich's ``SIMPLE_HEAD`` box.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        widths: Sequence[int],
        rows: Sequence[Sequence[Text]],
        *,
        title: str | None = None,
    ) -> None:
        self.columns = list(columns)
        self.widths = list(widths)
        self.rows = rows
        self.title = title
        self.caption: str | None = None

    def lines(self) -> list[Text]:
        """The table's lines: title, header, rule, rows, caption."""
        gap = " " * _GAP
        out: list[Text] = []
        if self.title:
            out.append(Text(self.title, style="italic"))
        header = [Text(c.header, style="bold") for c in self.columns]
        out.append(self._line(header, gap))
        total = sum(self.widths) + _GAP * (len(self.widths) - 1)
        out.append(Text("─" * total, style="dim"))
        out += [self._line(row, gap) for row in self.rows]
        if self.caption:
            out.append(Text(self.caption, style="dim"))
        return out

    def _line(self, cells: Sequence[Text], gap: str) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        for index, (cell, width, column) in enumerate(
            zip(cells, self.widths, self.columns, strict=True)
        ):
            if index:
                line.append(gap)
            piece = cell.copy()
            piece.truncate(width, overflow="ellipsis")
            pad = " " * (width - piece.cell_len)
            if column.justify == "right":
                line.append(pad)
                line.append_text(piece)
            else:
                line.append_text(piece)
                if index < len(cells) - 1:
                    line.append(pad)
        return line

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines():
            yield from line.render(console)
            yield Segment.line()


def _as_text(cell: str | Text) -> Text:
    """A cell as text: a str is shown as written, never read as markup."""
    return cell if isinstance(cell, Text) else Text(cell)


def _cell_width(cell: str | Text) -> int:
    return (cell.cell_len if isinstance(cell, Text) else Text(cell).cell_len) if cell else 0


def _fit(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    width: int,
    keep: list[int],
    *,
    last_resort: bool,
) -> dict[int, int] | None:
    """Each kept column's width, or ``None`` when they do not fit without leaving one out
    (with ``last_resort``, every column is narrowed as far as it takes)."""
    natural: dict[int, int] = {}
    for i in keep:
        column = columns[i]
        content = max([Text(column.header).cell_len, *(_cell_width(r[i]) for r in rows)])
        natural[i] = content if column.cap is None else min(content, column.cap)
    room = width - _GAP * (len(keep) - 1)
    free = [i for i in keep if columns[i].free]
    fixed = [i for i in keep if not columns[i].free]
    widths = dict(natural)
    wanted = max(MIN_FREE, width // 4)
    over = sum(widths[i] for i in fixed) + sum(min(natural[i], wanted) for i in free) - room
    for hard in (False, True) if last_resort else (False,):
        # narrow the widest of the columns one may narrow, a character at a time
        group = [i for i in fixed if columns[i].hard == hard]
        while over > 0:
            wide = [i for i in group if widths[i] > (columns[i].floor or 1)]
            if not wide:
                break
            widest = max(wide, key=lambda i: widths[i])
            widths[widest] -= 1
            over -= 1
    if over > 0 and not last_resort:
        return None
    left = max(room - sum(widths[i] for i in fixed), len(free))
    for i in free:
        widths[i] = max(1, min(natural[i], left // len(free)))
    return widths


_TASK_COLUMNS: Final = (
    Column("id", cap=40, floor=8, hard=True),
    Column("state", cap=22, floor=9),
    Column("agent", cap=20, floor=6),
    Column("att", justify="right", optional=3, hard=True),
    Column("worker", cap=48, floor=8, optional=1),
    Column("created", optional=2, hard=True),
    Column("description", free=True),
)


def task_row(task: Task) -> tuple[str | Text, ...]:
    """One row of :func:`task_table`."""
    return (
        task.id,
        state_text(task),
        task.agent,
        f"{task.attempt}/{task.max_attempts}",
        task.worker_id or "-",
        when(task.created_at, short=True),
        one_line(task.description or task.prompt or ("(input)" if task.input is not None else "")),
    )


def task_table(tasks: Iterable[Task], *, width: int, title: str | None = None) -> FittedTable:
    """A table of tasks, one row each, fitted to ``width``."""
    return fitted_table(_TASK_COLUMNS, [task_row(t) for t in tasks], width=width, title=title)


def record_table(task: Task) -> Table:
    """Every field of one task, a row each (long values wrap at spaces)."""
    table = Table(show_header=False, box=box.SIMPLE, pad_edge=False, show_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in msgspec.structs.asdict(task).items():
        if name == "state":
            table.add_row(name, state_text(task))
        elif isinstance(value, datetime):
            table.add_row(name, when(value))
        elif name == "not_before" and value is not None:
            table.add_row(name, when(datetime.fromtimestamp(value, UTC)))
        else:
            table.add_row(name, Text("-" if value is None else text(value)))
    return table


def event_summary(event: RecordedEvent) -> str:
    """The payload's fields that differ from their defaults, as ``key=value`` text."""
    parts = []
    for field in msgspec.structs.fields(event.payload):
        value = getattr(event.payload, field.name)
        default = field.default_factory() if callable(field.default_factory) else field.default
        if value != default:
            parts.append(f"{field.name}={one_line(text(value), 60)[:60]}")
    return " ".join(parts)


_HISTORY_COLUMNS: Final = (
    Column("v", justify="right", hard=True),
    Column("seq", justify="right", optional=2, hard=True),
    Column("time", hard=True),
    Column("event", cap=22, floor=10, hard=True),
    Column("actor", cap=24, floor=8),
    Column("reason", cap=40, floor=8, optional=1),
    Column("details", free=True),
)


def history_table(
    events: Iterable[RecordedEvent], *, width: int, title: str | None = None
) -> FittedTable:
    """A timeline of events with actor, reason and time, fitted to ``width``."""
    return history_rows_table([history_row(e) for e in events], width=width, title=title)


def history_rows_table(
    rows: Sequence[Sequence[str | Text]], *, width: int, title: str | None = None
) -> FittedTable:
    """A timeline of rows made by :func:`history_row`, fitted to ``width``."""
    return fitted_table(_HISTORY_COLUMNS, rows, width=width, title=title)


def history_row(event: RecordedEvent) -> tuple[str, ...]:
    """One row of :func:`history_table`: short text, whatever the size of the event."""
    return (
        str(event.version),
        str(event.sequence),
        event.recorded_at.astimezone().strftime("%H:%M:%S.%f")[:-3],
        event.type,
        event.actor,
        one_line(event.reason or "", 200),
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
