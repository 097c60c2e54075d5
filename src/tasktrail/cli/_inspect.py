"""Commands that read a database: show, logs, history, replay, verify, rebuild, export
(``ls`` and ``stats`` have modules of their own). None of them writes an event
(``rebuild`` rewrites only the projection)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any, Final

import click
import msgspec
from rich.table import Table
from rich.text import Text

from tasktrail.cli._app import (
    CLI_POLL,
    console,
    db_option,
    emit_json,
    json_option,
    main,
    open_existing,
    renamed,
    resolve_task,
    run_async,
    task_id_argument,
)
from tasktrail.cli._format import (
    changes,
    history_row,
    history_rows_table,
    record_table,
    state_text,
    text,
)
from tasktrail.cli._notes import pending_notes
from tasktrail.cli._progress import progress
from tasktrail.cli._times import parse_moment
from tasktrail.errors import InvalidInputError, TaskNotFoundError
from tasktrail.events import OutputAppended, RecordedEvent
from tasktrail.projection import Task, fold
from tasktrail.store import EventStore

__all__ = ["print_output", "waiting_notes"]

_HISTORY_PAGE: Final = 500
"""Events per table of ``history``: a long history is printed as it is read."""
_LINKS_SHOWN: Final = 20
"""Children and reruns named under ``show`` (then how many more, and how to list them)."""
NOTE_AFTER: Final = 3.0
"""Seconds ``wait`` and ``logs --follow`` wait before saying why a task does not start."""
_NOTE_EVERY: Final = 10.0


@main.command()
@task_id_argument
@db_option
@json_option
@run_async
async def show(task_id: str, db: str | None, as_json: bool) -> None:
    """Show one task's current state: every field of its record, then its links (the task
    it re-runs, its reruns, its children with their states) and, if it waits, why.

    The id may be a prefix of it, when only one task's id starts so.

    \b
    Example:
      tasktrail show 3f2a9c1d0e4b
      tasktrail show 3f2a --json | jq .state
    """
    async with open_existing(db) as store:
        task = await resolve_task(store, task_id)
        if as_json:
            emit_json(task)
            return
        links = []
        for name, key in (("reruns", "rerun_of"), ("children", "parent_id")):
            link: dict[str, Any] = {key: task.id}
            found = await store.list_tasks(**link, limit=_LINKS_SHOWN + 1)
            total = await store.count_tasks(**link) if len(found) > _LINKS_SHOWN else len(found)
            links.append((name, found, total))
        notes = await pending_notes(store, [task])
    out = console()
    out.print(record_table(task))
    for name, found, total in links:
        if found:
            listed = ", ".join(f"{t.id} ({t.state.value})" for t in found[:_LINKS_SHOWN])
            rest = f" and {total - _LINKS_SHOWN:,} more" if total > _LINKS_SHOWN else ""
            out.print(Text(f"{name}: {listed}{rest}"))
    for note in notes:
        out.print(Text(note, style="yellow"))


@main.command()
@task_id_argument
@db_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task finishes.")
@json_option
@run_async
async def logs(task_id: str, db: str | None, follow: bool, as_json: bool) -> None:
    """Print a task's output (its stdout here, its stderr on stderr).

    With --follow, wait for more output until the task is finished; another process may be
    running it. If it does not start within a few seconds because no live worker serves
    its agent, or its agent or key is paused, a line on stderr says so. With --json, print
    one output event per line.

    \b
    Example:
      tasktrail logs 3f2a9c1d0e4b --follow
    """
    async with open_existing(db) as store:
        task = await resolve_task(store, task_id)
        async with waiting_notes(store, [task.id], enabled=follow):
            await print_output(store, task.id, follow=follow, as_json=as_json)


async def print_output(store: Any, task_id: str, *, follow: bool, as_json: bool) -> Task:
    """Print the task's output events (``follow``: until it is finished); return the task.

    The output is read in bounded chunks (``iter_stream``): memory does not grow with it.
    """
    version = 0
    while True:
        task = await _task(store, task_id)  # read first: every event up to it is then seen
        async for events in store.iter_stream(task_id, after_version=version):
            for event in events:
                version = event.version
                if not isinstance(event.payload, OutputAppended):
                    continue
                if as_json:
                    emit_json(event)
                else:
                    stream = sys.stderr if event.payload.channel == "stderr" else sys.stdout
                    stream.write(event.payload.text)
            sys.stdout.flush()
            sys.stderr.flush()
        if not follow or task.is_terminal:
            return task
        await asyncio.sleep(CLI_POLL)


@contextlib.asynccontextmanager
async def waiting_notes(
    store: EventStore, task_ids: list[str], *, enabled: bool = True
) -> AsyncIterator[None]:
    """While the body waits for ``task_ids``: after :data:`NOTE_AFTER` seconds, and then
    every :data:`_NOTE_EVERY`, say on stderr (once per reason) why those still pending do
    not start: no live worker serves their agent, or it or their key is paused."""
    if not enabled:
        yield
        return
    said: set[str] = set()

    async def watch() -> None:
        await asyncio.sleep(NOTE_AFTER)
        while True:
            with contextlib.suppress(Exception):  # a note is a courtesy: never fail the wait
                tasks = await store.get_tasks(task_ids)
                for note in await pending_notes(store, tasks):
                    if note not in said:
                        said.add(note)
                        click.echo(f"tasktrail: {note}", err=True)
            await asyncio.sleep(_NOTE_EVERY)

    watcher = asyncio.get_running_loop().create_task(watch(), name="tasktrail-notes")
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _task(store: Any, task_id: str) -> Task:
    task: Task | None = await store.get_task(task_id)
    if task is None:
        raise TaskNotFoundError(task_id)
    return task


async def _events(store: Any, task_id: str) -> AsyncIterator[RecordedEvent]:
    """Every event of a task, in order, read in bounded chunks; TaskNotFoundError when
    there is none."""
    found = False
    async for events in store.iter_stream(task_id):
        found = True
        for event in events:
            yield event
    if not found:
        raise TaskNotFoundError(task_id)


@main.command()
@task_id_argument
@db_option
@json_option
@run_async
async def history(task_id: str, db: str | None, as_json: bool) -> None:
    """Show every event of a task: a timeline with actor, reason and time.

    A long history is printed as it is read, in tables of 500 events. With --json, one
    event per line.

    \b
    Example:
      tasktrail history 3f2a9c1d0e4b
      tasktrail history 3f2a --json | jq -c '[.version, .type, .actor, .reason]'
    """
    out = console()
    title: str | None = None
    rows: list[tuple[str, ...]] = []
    async with open_existing(db) as store:
        found = await resolve_task(store, task_id)
        title = f"history of {found.id}"
        async for event in _events(store, found.id):
            if as_json:
                emit_json(event)
                continue
            rows.append(history_row(event))  # a row of short text, not the event
            if len(rows) == _HISTORY_PAGE:
                out.print(history_rows_table(rows, width=out.width, title=title))
                rows, title = [], None
    if rows:
        out.print(history_rows_table(rows, width=out.width, title=title))


@main.command()
@task_id_argument
@db_option
@click.option(
    "--at-version", "at_version", type=click.IntRange(min=1), metavar="N",
    help="The state at this version (after the task's N-th event).",
)  # fmt: skip
@click.option(
    "--version", "old_version", type=click.IntRange(min=1), hidden=True,
    help="Old name of --at-version.",
)  # fmt: skip
@click.option("--at", "at", metavar="TIME", help="The state at this time (ISO 8601 or Unix).")
@click.option("--step", is_flag=True, help="On a terminal, pause after each event.")
@json_option
@run_async
async def replay(
    task_id: str,
    db: str | None,
    at_version: int | None,
    old_version: int | None,
    at: str | None,
    step: bool,
    as_json: bool,
) -> None:
    """Replay a task from its log: its state at a version or time, or event by event.

    Without --at-version or --at, print each event with the state it led to and the fields
    it changed. The replay folds the log itself; it never reads the projection.

    \b
    Example:
      tasktrail replay 3f2a9c1d0e4b                     # step by step
      tasktrail replay 3f2a --at-version 3              # the task as of its 3rd event
      tasktrail replay 3f2a --at 2026-11-21T08:30       # the task as it was then
    """
    version = renamed(at_version, old_version, old="--version", new="--at-version")
    if version is not None and at is not None:
        raise InvalidInputError("give --at-version or --at, not both")
    async with open_existing(db) as store:
        task_id = (await resolve_task(store, task_id)).id
        if version is not None or at is not None:
            moment = parse_moment(at) if at is not None else None
            then = await store.state_at(task_id, version=version, at=moment)
            if then is None:
                raise InvalidInputError(f"task {task_id!r} did not exist yet at {at}")
            if as_json:
                emit_json(then)
            else:
                console().print(record_table(then))
            return
        await _step_through(_events(store, task_id), as_json=as_json, pause=step and not as_json)


async def _step_through(
    events: AsyncIterator[RecordedEvent], *, as_json: bool, pause: bool
) -> None:
    out = console()
    task: Task | None = None
    async for event in events:
        if pause and task is not None:
            click.pause("  (press any key for the next event)")
        before, task = task, fold(task, event)
        changed = changes(before, task)
        if as_json:
            emit_json({"event": event, "task": task, "changed": sorted(changed)})
            continue
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="dim", no_wrap=True)
        table.add_column(overflow="fold")
        for name, value in changed.items():
            table.add_row(name, Text(text(value)))
        reason = f" - {event.reason}" if event.reason else ""
        line = Text.assemble(
            (f"v{event.version}", "bold"),
            f" #{event.sequence} {event.recorded_at.astimezone():%H:%M:%S.%f} ",
            (event.type, "bold"),
            f" by {event.actor}{reason} -> ",
            state_text(task),
        )
        out.print(line)
        if changed:
            out.print(table)


@main.command()
@db_option
@json_option
@run_async
async def verify(db: str | None, as_json: bool) -> None:
    """Recompute the hash chain and check the projection against the log.

    Prints the number of events checked, the head's sequence number and hash, and whether
    the projection agrees (a progress bar on stderr while it works, on a terminal). Exits
    5 naming the first bad sequence number when the log was tampered with, and 10 when the
    projection differs from the log (repair it with `tasktrail rebuild`).

    \b
    Example:
      tasktrail verify
      tasktrail verify --json > checkpoint.json   # keep head_sequence/head_hash elsewhere
    """
    async with open_existing(db) as store:
        head = await store.head()
        with progress("checking the hash chain", total=head):
            report = await store.verify()
        with progress("comparing the projection with the log", total=head):
            stale = await store.check_projection()
    if as_json:
        emit_json({**msgspec.structs.asdict(report), "projection_mismatches": stale})
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
@json_option
@run_async
async def rebuild(db: str | None, as_json: bool) -> None:
    """Drop the task projection and replay it from the log.

    Prints how many tasks were rebuilt (with --json: {"tasks": N, "events": N}); a
    progress bar on stderr while it works, on a terminal.

    \b
    Example:
      tasktrail rebuild
      tasktrail rebuild --json
    """
    async with open_existing(db) as store:
        head = await store.head()
        with progress("replaying the log", total=head):
            count = await store.rebuild()
    if as_json:
        emit_json({"tasks": count, "events": head})
    else:
        click.echo(f"rebuilt {count} task(s) from the log")


@main.command()
@db_option
@click.option(
    "--since",
    metavar="SEQ|TIME",
    default="0",
    show_default=True,
    help="Only events after this sequence number, or recorded at or after this time "
    "(ISO 8601, Unix, or ago: 30m, 2h, 1d).",
)
@run_async
async def export(db: str | None, since: str) -> None:
    """Print the log as JSON lines, one event per line, in sequence order.

    Each line is an event under the JSON convention of every --json (see the reference);
    a progress bar on stderr while it works, on a terminal.

    \b
    Example:
      tasktrail export > events.jsonl
      tasktrail export --since 1200 >> events.jsonl
      tasktrail export --since 2h | jq -c 'select(.type == "task.failed")'
    """
    from tasktrail.cli._times import parse_since

    after, moment = (int(since), None) if since.isdigit() else (0, parse_since(since))
    async with open_existing(db) as store:
        head = await store.head()
        with progress("exporting the log", total=max(0, head - after)) as advance:
            while events := await store.read_all(after=after, limit=5000):
                for event in events:
                    if moment is None or event.recorded_at >= moment:
                        emit_json(event)
                advance(len(events))
                after = events[-1].sequence
