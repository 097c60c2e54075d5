"""``tasktrail ls``: one page of tasks, fast on any size of log.

A page is a keyset query on the store's listing indexes (``list_tasks(after_id=...)``):
reading and printing it costs the same on the first page as on the thousandth, and on a log
of a million events as on an empty one. Under the table, a line says how many more tasks
match (counted up to :data:`COUNT_CAP`, so that too is bounded) and how to see them.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from typing import Any, Final

import click
from rich.console import Group
from rich.live import Live
from rich.text import Text

from tasktrail.cli._app import (
    console,
    db_option,
    emit_json,
    json_option,
    main,
    on_signals,
    open_existing,
    resolve_id,
    run_async,
)
from tasktrail.cli._format import task_table
from tasktrail.cli._notes import pending_notes
from tasktrail.cli._times import parse_since
from tasktrail.errors import InvalidInputError
from tasktrail.lifecycle import TaskState
from tasktrail.store import EventStore

__all__ = ["COUNT_CAP", "DEFAULT_LIMIT"]

DEFAULT_LIMIT: Final = 50
COUNT_CAP: Final = 10_000
"""The most tasks counted for the "N more" line (then it says "10,000+ more")."""
_SORTS: Final = {
    "newest": ("created", True),
    "oldest": ("created", False),
    "updated": ("updated", True),
}
_STATES = click.Choice([s.value for s in TaskState])


@main.command()
@db_option
@click.option("--state", "states", type=_STATES, multiple=True, help="Only this state (repeat).")
@click.option("--agent", "agents", multiple=True, help="Only tasks of this agent (repeat).")
@click.option(
    "--worker", default=None, metavar="WORKER_ID",
    help="Only tasks this worker holds or last held.",
)  # fmt: skip
@click.option("--parent", default=None, metavar="TASK_ID", help="Only children of this task.")
@click.option(
    "--since", default=None, metavar="TIME",
    help="Only tasks created at or after this time (ISO 8601, Unix, or ago: 30m, 2h, 1d).",
)  # fmt: skip
@click.option(
    "--until", default=None, metavar="TIME",
    help="Only tasks created before this time (ISO 8601, Unix, or ago: 30m, 2h, 1d).",
)  # fmt: skip
@click.option(
    "--sort", type=click.Choice(list(_SORTS)), default="newest", show_default=True,
    help="newest or oldest created first, or the most recently changed first.",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", default=None,
    help=f"At most this many [default: {DEFAULT_LIMIT}; with --watch, what fits the screen].",
)  # fmt: skip
@click.option("--all", "everything", is_flag=True, help="Every matching task (no limit).")
@click.option(
    "--cursor", default=None, metavar="TASK_ID",
    help="Continue after this task: the next page (the line under the table names it).",
)  # fmt: skip
@click.option(
    "--offset", type=click.IntRange(min=0), metavar="N", default=0,
    help="Skip this many matching tasks first.",
)  # fmt: skip
@click.option(
    "--watch", "-w", is_flag=True, help="Redraw the table when tasks change, until Ctrl-C."
)
@json_option
@run_async
async def ls(
    db: str | None,
    states: tuple[str, ...],
    agents: tuple[str, ...],
    worker: str | None,
    parent: str | None,
    since: str | None,
    until: str | None,
    sort: str,
    limit: int | None,
    everything: bool,
    cursor: str | None,
    offset: int,
    watch: bool,
    as_json: bool,
) -> None:
    """List tasks, newest first, a page at a time (50 unless told otherwise).

    Prints a table (id, state, agent, attempt, worker, created, description) fitted to
    the terminal; under it how many more tasks match and the command for the next page,
    and the agents of pending tasks that no live worker serves or that are paused. With
    --json, one task per line (the notes go to stderr). Task ids may be given by a prefix.

    \b
    Example:
      tasktrail ls --state running --state pending
      tasktrail ls --agent shell --since 2h
      tasktrail ls --cursor 3f2a9c1d0e4b          # the next page
      tasktrail ls --all --json | jq -r .id
    """
    if watch and as_json:
        raise InvalidInputError("--watch draws a table; it does not go with --json")
    if everything and (limit is not None or watch):
        raise InvalidInputError("--all lists every task: it goes with neither --limit nor --watch")
    sort_by, newest_first = _SORTS[sort]
    filters: dict[str, Any] = {
        "state": states or None,
        "agent": agents or None,
        "worker_id": worker,
        "since": None if since is None else parse_since(since),
        "until": None if until is None else parse_since(until),
    }
    async with open_existing(db) as store:
        if parent is not None:
            filters["parent_id"] = await resolve_id(store, parent)
        after = None if cursor is None else await resolve_id(store, cursor)
        order: dict[str, Any] = {"sort": sort_by, "newest_first": newest_first}
        if watch:
            await _watch(store, filters, order, limit=limit, after=after, offset=offset)
            return
        if everything:
            await _print_all(store, filters, order, after=after, offset=offset, as_json=as_json)
            return
        size = limit or DEFAULT_LIMIT
        tasks = await store.list_tasks(
            **filters, **order, after_id=after, offset=offset, limit=size
        )
        more = 0
        if len(tasks) == size:
            more = await store.count_tasks(
                **filters, **order, after_id=tasks[-1].id, limit=COUNT_CAP
            )
        notes = await pending_notes(store, tasks)
    if as_json:
        for task in tasks:
            emit_json(task)
        if more:
            click.echo(_more_line(more, tasks[-1].id), err=True)
        return
    out = console()
    if tasks:
        out.print(task_table(tasks, width=out.width))
    else:
        out.print("no task matches" if any(v for v in filters.values()) else "no tasks yet")
    if more:
        out.print(Text(_more_line(more, tasks[-1].id), style="dim"), soft_wrap=True)
    for note in notes:
        out.print(Text(note, style="yellow"))


def _more_line(more: int, last: str) -> str:
    count = f"{COUNT_CAP:,}+" if more >= COUNT_CAP else f"{more:,}"
    return f"{count} more: next page with --cursor {last} (or --limit N, --all)"


async def _print_all(
    store: EventStore,
    filters: dict[str, Any],
    order: dict[str, Any],
    *,
    after: str | None,
    offset: int,
    as_json: bool,
) -> None:
    """Every matching task, a page at a time (memory does not grow with the count)."""
    out = console()
    shown = 0
    while tasks := await store.list_tasks(
        **filters, **order, after_id=after, offset=offset, limit=1000
    ):
        offset = 0
        after = tasks[-1].id
        if as_json:
            for task in tasks:
                emit_json(task)
        else:
            out.print(task_table(tasks, width=out.width))
        shown += len(tasks)
    if not as_json:
        out.print(Text(f"{shown:,} tasks", style="dim"))


async def _watch(
    store: EventStore,
    filters: dict[str, Any],
    order: dict[str, Any],
    *,
    limit: int | None,
    after: str | None,
    offset: int,
) -> None:
    """Draw the page, then draw it again only when what it shows changed (a task's state,
    version or count): the store's change signal wakes it, at the latest every second."""
    stop = asyncio.Event()
    out = console()
    size = limit or max(5, out.height - 6)
    shown: tuple[tuple[str, int], ...] | None = None
    with (
        on_signals(lambda _: stop.set(), signal.SIGINT, signal.SIGTERM),
        Live(console=out, auto_refresh=False) as live,
    ):
        while not stop.is_set():
            tasks = await store.list_tasks(
                **filters, **order, after_id=after, offset=offset, limit=size
            )
            notes = await pending_notes(store, tasks)
            seen = tuple((t.id, t.version) for t in tasks) + tuple((n, 0) for n in notes)
            if seen != shown:
                shown = seen
                title = f"{len(tasks)} tasks, as of {datetime.now().astimezone():%H:%M:%S}"
                parts: list[Any] = [task_table(tasks, width=out.width, title=title)]
                parts += [Text(note, style="yellow") for note in notes]
                live.update(Group(*parts), refresh=True)
            await _first(stop.wait(), store.wait_for_change(1.0))


async def _first(*waits: Any) -> None:
    """Return when the first of ``waits`` returns."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
