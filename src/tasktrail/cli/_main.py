"""Commands: inspect, replay, verify and rebuild a tasktrail database; run the demo.

Every command reads its database from ``--db PATH``, else ``$TASKTRAIL_DB``, else
``tasktrail.db`` in the current directory. A tasktrail error ends the command with one
line on stderr and an exit code naming its kind (see :data:`EXIT_CODES`), never a
traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from tasktrail.errors import (
    CorruptDatabaseError,
    IllegalTransitionError,
    InvalidInputError,
    ReadOnlyStorageError,
    StorageBusyError,
    StorageError,
    TamperedLogError,
    TaskNotFoundError,
    TasktrailError,
)
from tasktrail.events import RecordedEvent
from tasktrail.projection import Task
from tasktrail.store import POSTGRES_SCHEMES, EventStore, SQLiteEventStore, open_store

__all__ = ["EXIT_CODES", "main"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DB: Final = "tasktrail.db"

EXIT_CODES: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (TaskNotFoundError, 3),
    (IllegalTransitionError, 4),
    (TamperedLogError, 5),
    (CorruptDatabaseError, 6),
    (ReadOnlyStorageError, 7),
    (StorageBusyError, 8),
    (StorageError, 9),
    (InvalidInputError, 2),
    (TasktrailError, 1),
)
"""Exit code by error kind; the first matching class wins. 2 is also click's usage error."""

_encode = msgspec.json.Encoder(order="deterministic").encode


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of a tasktrail error."""
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


def run_async(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command body; turn a tasktrail error into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except TasktrailError as err:
            click.echo(f"tasktrail: error: {err}", err=True)
            sys.exit(exit_code_for(err))
        except KeyboardInterrupt:
            click.echo("tasktrail: interrupted", err=True)
            sys.exit(130)

    return wrapper


def _db_path(db: str | None) -> str:
    return db or os.environ.get("TASKTRAIL_DB") or DEFAULT_DB


def _open_existing(db: str | None) -> EventStore:
    path = _db_path(db)
    if path.startswith(POSTGRES_SCHEMES):
        return open_store(path)  # a postgresql:// URL: the PostgreSQL backend
    if not Path(path).exists():
        raise StorageError(f"no database at {path}; pass --db PATH or set TASKTRAIL_DB")
    return SQLiteEventStore(path)


db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Database file [default: $TASKTRAIL_DB, else ./{DEFAULT_DB}].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _fmt_time(task_time: Any) -> str:
    return task_time.strftime("%Y-%m-%d %H:%M:%S") if task_time is not None else "-"


def task_table(tasks: list[Task], title: str | None = None) -> Table:
    """A table of tasks, one row each."""
    table = Table(title=title)
    for column in ("id", "state", "agent", "attempt", "version", "created", "description"):
        table.add_column(column, overflow="fold")
    colours = {"completed": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    for task in tasks:
        state = task.state.value
        table.add_row(
            task.id,
            f"[{colours.get(state, 'white')}]{state}[/]",
            task.agent,
            str(task.attempt),
            str(task.version),
            _fmt_time(task.created_at),
            task.description or task.prompt[:40],
        )
    return table


def event_summary(event: RecordedEvent) -> str:
    """The payload's fields that differ from their defaults, as ``key=value`` text."""
    parts = []
    for field in msgspec.structs.fields(event.payload):
        value = getattr(event.payload, field.name)
        default = field.default_factory() if callable(field.default_factory) else field.default
        if value != default:
            parts.append(f"{field.name}={json.dumps(value)[:60]}")
    return " ".join(parts)


def history_table(events: list[RecordedEvent], title: str | None = None) -> Table:
    """A timeline of events with actor, reason and time."""
    table = Table(title=title)
    for column in ("v", "seq", "time", "event", "actor", "reason", "details"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            str(event.version),
            str(event.sequence),
            event.recorded_at.strftime("%H:%M:%S.%f")[:-3],
            event.type,
            event.actor,
            event.reason or "",
            event_summary(event),
        )
    return table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tasktrail")
def main() -> None:
    """tasktrail: durable background tasks on an append-only, hash-chained event log.

    \b
    Example:
      tasktrail demo
      tasktrail --help
    """


@main.command()
@db_option
@click.option("--state", default=None, help="Only tasks in this state.")
@click.option("--agent", default=None, help="Only tasks of this agent.")
@json_option
@run_async
async def ls(db: str | None, state: str | None, agent: str | None, as_json: bool) -> None:
    """List tasks, oldest first.

    \b
    Example:
      tasktrail ls --db tasks.db --state failed
    """
    async with _open_existing(db) as store:
        tasks = await store.list_tasks(state=state, agent=agent)
    if as_json:
        click.echo(_encode(tasks).decode())
    else:
        _console().print(task_table(tasks))


@main.command()
@click.argument("task_id")
@db_option
@json_option
@run_async
async def show(task_id: str, db: str | None, as_json: bool) -> None:
    """Show one task's current state.

    \b
    Example:
      tasktrail show 3f2a... --db tasks.db
    """
    async with _open_existing(db) as store:
        task = await store.get_task(task_id)
    if task is None:
        raise TaskNotFoundError(task_id)
    if as_json:
        click.echo(_encode(task).decode())
        return
    table = Table(show_header=False)
    for name, value in msgspec.structs.asdict(task).items():
        table.add_row(name, str(value))
    _console().print(table)


@main.command()
@click.argument("task_id")
@db_option
@json_option
@run_async
async def history(task_id: str, db: str | None, as_json: bool) -> None:
    """Show every event of a task: a timeline with actor, reason and time.

    \b
    Example:
      tasktrail history 3f2a... --db tasks.db
    """
    async with _open_existing(db) as store:
        events = await store.history(task_id)
    if as_json:
        for event in events:
            click.echo(_encode(event).decode())
    else:
        _console().print(history_table(events, title=f"history of {task_id}"))


@main.command()
@db_option
@json_option
@run_async
async def verify(db: str | None, as_json: bool) -> None:
    """Recompute the hash chain and check the projection against the log.

    Exits 5 naming the first bad sequence number when the log was tampered with.

    \b
    Example:
      tasktrail verify --db tasks.db
    """
    async with _open_existing(db) as store:
        report = await store.verify()
        stale = await store.check_projection()
    if as_json:
        click.echo(_encode({**msgspec.structs.asdict(report), "projection_mismatches": stale}))
    else:
        click.echo(
            f"chain ok: {report.events} events, head {report.head_sequence} "
            f"hash {report.head_hash[:16]}"
        )
        click.echo(
            "projection ok"
            if not stale
            else f"projection differs from the log for {len(stale)} task(s): {', '.join(stale[:5])}"
            " (run 'tasktrail rebuild')"
        )
        if not report.append_only:
            click.echo("warning: the append-only triggers on the events table are missing")
    if stale or not report.append_only:
        sys.exit(10)


@main.command()
@db_option
@run_async
async def rebuild(db: str | None) -> None:
    """Drop the task projection and replay it from the log.

    \b
    Example:
      tasktrail rebuild --db tasks.db
    """
    async with _open_existing(db) as store:
        count = await store.rebuild()
    click.echo(f"rebuilt {count} task(s) from the log")


@main.command()
@db_option
@click.option(
    "--since", type=int, default=0, show_default=True, help="Only events after this sequence."
)
@run_async
async def export(db: str | None, since: int) -> None:
    """Print the log as JSON lines, one event per line.

    \b
    Example:
      tasktrail export --db tasks.db --since 100 > events.jsonl
    """
    async with _open_existing(db) as store:
        after = since
        while events := await store.read_all(after=after, limit=5000):
            for event in events:
                click.echo(_encode(event).decode())
            after = events[-1].sequence


@main.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the demo database in this directory.",
)
@click.option(
    "--tasks",
    "task_count",
    type=click.IntRange(3, 500),
    default=8,
    show_default=True,
    help="How many simulated agent tasks.",
)
def demo(keep: str | None, task_count: int) -> None:
    """Show tasktrail at work, in a few seconds, with nothing to set up.

    \b
    Example:
      tasktrail demo
    """
    from tasktrail.cli._demo import run_demo

    run_async(run_demo)(keep=keep, task_count=task_count, console=_console())
