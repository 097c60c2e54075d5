"""Commands that read a database: ls, show, logs, history, replay, stats, verify, rebuild,
export. None of them writes an event (``rebuild`` rewrites only the projection)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import click
import msgspec
from rich.live import Live
from rich.table import Table

from tasktrail.cli._app import (
    console,
    db_option,
    emit_json,
    json_option,
    main,
    on_signals,
    open_existing,
    run_async,
    task_id_argument,
)
from tasktrail.cli._format import (
    STATE_COLOURS,
    age,
    changes,
    history_row,
    history_table,
    record_table,
    state,
    task_table,
    text,
)
from tasktrail.cli._times import parse_moment, parse_since
from tasktrail.errors import InvalidInputError, TaskNotFoundError
from tasktrail.events import OutputAppended, RecordedEvent
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.runtime.recovery import unserved_agents

__all__ = ["print_output"]

_STATES = click.Choice([s.value for s in TaskState])
_FOLLOW_POLL = 0.2
_HISTORY_PAGE = 500
"""Events per table of ``history``: a long history is printed as it is read."""


def when_now() -> str:
    """The local time now, for a live view's title."""
    return datetime.now().astimezone().strftime("%H:%M:%S")


async def unserved_note(store: Any, tasks: list[Task]) -> str | None:
    """A line naming the agents of pending ``tasks`` that no live worker serves."""
    agents = {t.agent for t in tasks if t.state is TaskState.PENDING}
    if not agents:
        return None
    missing = unserved_agents(agents, await store.list_workers(), now=time.time())
    if not missing:
        return None
    names = ", ".join(sorted(missing))
    return (
        f"no worker serves agent {names}: its pending tasks wait for one "
        "(start `tasktrail worker` with that agent)"
    )


@main.command()
@db_option
@click.option("--state", "states", type=_STATES, multiple=True, help="Only this state (repeat).")
@click.option("--agent", "agents", multiple=True, help="Only tasks of this agent (repeat).")
@click.option("--parent", default=None, metavar="TASK_ID", help="Only children of this task.")
@click.option(
    "--since", default=None, metavar="TIME",
    help="Only tasks created at or after this time (ISO 8601, Unix, or ago: 30m, 2h, 1d).",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", default=None, help="At most this many."
)
@click.option("--watch", "-w", is_flag=True, help="Redraw the table every second until Ctrl-C.")
@json_option
@run_async
async def ls(
    db: str | None,
    states: tuple[str, ...],
    agents: tuple[str, ...],
    parent: str | None,
    since: str | None,
    limit: int | None,
    watch: bool,
    as_json: bool,
) -> None:
    """List tasks, newest first.

    Under the table, a line names the agents of pending tasks that no live worker serves.

    \b
    Example:
      tasktrail ls --state running --state pending
      tasktrail ls --agent shell --since 2h
      tasktrail ls --watch --limit 20
      tasktrail ls --agent shell --json | jq -r '.[].id'
    """
    if watch and as_json:
        raise InvalidInputError("--watch draws a table; it does not go with --json")
    moment = None if since is None else parse_since(since)
    async with open_existing(db) as store:

        async def listing() -> list[Task]:
            found: list[Task] = await store.list_tasks(
                state=states or None, agent=agents or None, parent_id=parent, since=moment,
                limit=limit, newest_first=True,
            )  # fmt: skip
            return found

        if as_json:
            emit_json(await listing())
        elif not watch:
            tasks = await listing()
            out = console()
            out.print(task_table(tasks))
            if note := await unserved_note(store, tasks):
                out.print(f"[yellow]{note}[/]")
        else:
            stop = asyncio.Event()
            with (
                on_signals(lambda _: stop.set(), signal.SIGINT, signal.SIGTERM),
                Live(console=console(), auto_refresh=False) as live,
            ):
                while not stop.is_set():
                    live.update(task_table(await listing(), title=f"{when_now()}"), refresh=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)


async def _task(store: Any, task_id: str) -> Task:
    task: Task | None = await store.get_task(task_id)
    if task is None:
        raise TaskNotFoundError(task_id)
    return task


@main.command()
@task_id_argument
@db_option
@json_option
@run_async
async def show(task_id: str, db: str | None, as_json: bool) -> None:
    """Show one task's current state: every field of its record, then its links (the task
    it re-runs, its reruns, its children with their states).

    \b
    Example:
      tasktrail show 3f2a9c...
      tasktrail show 3f2a9c... --json | jq .state
    """
    async with open_existing(db) as store:
        task = await _task(store, task_id)
        if as_json:
            emit_json(task)
            return
        reruns = await store.list_tasks(rerun_of=task.id)
        children = await store.list_tasks(parent_id=task.id)
        note = await unserved_note(store, [task])
    out = console()
    out.print(record_table(task))
    if reruns:
        out.print("reruns: " + ", ".join(f"{t.id} ({t.state.value})" for t in reruns))
    if children:
        out.print("children: " + ", ".join(f"{t.id} ({t.state.value})" for t in children))
    if note:
        out.print(f"[yellow]{note}[/]")


@main.command()
@task_id_argument
@db_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task finishes.")
@json_option
@run_async
async def logs(task_id: str, db: str | None, follow: bool, as_json: bool) -> None:
    """Print a task's output (its stdout here, its stderr on stderr).

    With --follow, wait for more output until the task is finished; another process may be
    running it. With --json, print one output event per line.

    \b
    Example:
      tasktrail logs 3f2a9c... --follow
    """
    async with open_existing(db) as store:
        await print_output(store, task_id, follow=follow, as_json=as_json)


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
        await asyncio.sleep(_FOLLOW_POLL)


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

    A long history is printed as it is read, in tables of 500 events.

    \b
    Example:
      tasktrail history 3f2a9c...
      tasktrail history 3f2a9c... --json | jq -c '[.version, .type, .actor, .reason]'
    """
    out = console()
    title: str | None = f"history of {task_id}"
    table, rows = None, 0
    async with open_existing(db) as store:
        async for event in _events(store, task_id):
            if as_json:
                emit_json(event)
                continue
            if table is None:
                table = history_table((), title=title)
            table.add_row(*history_row(event))  # a row of short text, not the event
            rows += 1
            if rows == _HISTORY_PAGE:
                out.print(table)
                table, title, rows = None, None, 0
    if table is not None:
        out.print(table)


@main.command()
@task_id_argument
@db_option
@click.option(
    "--version", "version", type=click.IntRange(min=1), metavar="N",
    help="The state at this version.",
)  # fmt: skip
@click.option("--at", "at", metavar="TIME", help="The state at this time (ISO 8601 or Unix).")
@click.option("--step", is_flag=True, help="On a terminal, pause after each event.")
@json_option
@run_async
async def replay(
    task_id: str, db: str | None, version: int | None, at: str | None, step: bool, as_json: bool
) -> None:
    """Replay a task from its log: its state at a version or time, or event by event.

    Without --version or --at, print each event with the state it led to and the fields it
    changed. The replay folds the log itself; it never reads the projection.

    \b
    Example:
      tasktrail replay 3f2a9c...                        # step by step
      tasktrail replay 3f2a9c... --version 3            # the task as of its 3rd event
      tasktrail replay 3f2a9c... --at 2026-11-21T08:30  # the task as it was then
    """
    if version is not None and at is not None:
        raise InvalidInputError("give --version or --at, not both")
    async with open_existing(db) as store:
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
        table.add_column(style="dim")
        table.add_column(overflow="fold")
        for name, value in changed.items():
            table.add_row(name, text(value))
        reason = f" - {event.reason}" if event.reason else ""
        out.print(
            f"[bold]v{event.version}[/] #{event.sequence} "
            f"{event.recorded_at.astimezone():%H:%M:%S.%f} [bold]{event.type}[/] "
            f"by {event.actor}{reason} -> {state(task)}"
        )
        if changed:
            out.print(table)


@main.command()
@db_option
@json_option
@run_async
async def stats(db: str | None, as_json: bool) -> None:
    """Counts per state and agent, throughput, the oldest pending task, the workers.

    \b
    Example:
      tasktrail stats
      tasktrail stats --json | jq .states
    """
    async with open_existing(db) as store:
        tasks = await store.list_tasks()
        head = await store.head()
        workers = await store.list_workers()
    now = datetime.now(UTC)
    by_state = Counter(t.state.value for t in tasks)
    by_agent: dict[str, Counter[str]] = {}
    for task in tasks:
        by_agent.setdefault(task.agent, Counter())[task.state.value] += 1
    finished = [t.finished_at for t in tasks if t.finished_at is not None]
    pending = [t for t in tasks if t.state is TaskState.PENDING]
    oldest = min(pending, key=lambda t: t.created_at, default=None)
    live_workers = [w for w in workers if w.stopped_at is None]
    figures: dict[str, Any] = {
        "tasks": len(tasks),
        "events": head,
        "states": {s.value: by_state.get(s.value, 0) for s in TaskState},
        "agents": {a: dict(sorted(c.items())) for a, c in sorted(by_agent.items())},
        "finished_last_minute": sum(1 for f in finished if (now - f).total_seconds() <= 60),
        "finished_last_hour": sum(1 for f in finished if (now - f).total_seconds() <= 3600),
        "oldest_pending": None
        if oldest is None
        else {"id": oldest.id, "created_at": oldest.created_at, "age_s": _seconds(now, oldest)},
        "workers_running": [
            {
                "worker_id": w.worker_id,
                "host": w.host,
                "pid": w.pid,
                "heartbeat_at": w.heartbeat_at,
                "agents": w.agents,
            }
            for w in live_workers
        ],
        "unserved_agents": sorted(
            unserved_agents({t.agent for t in pending}, workers, now=now.timestamp())
        ),
    }
    if as_json:
        emit_json(figures)
        return
    out = console()
    table = Table(title=f"{len(tasks)} tasks, {head} events")
    table.add_column("agent")
    for s in TaskState:
        table.add_column(f"[{STATE_COLOURS[s.value]}]{s.value}[/]", justify="right")
    for agent, counts in sorted(by_agent.items()):
        table.add_row(agent, *(str(counts.get(s.value, 0)) for s in TaskState))
    table.add_row("[bold]all[/]", *(f"[bold]{by_state.get(s.value, 0)}[/]" for s in TaskState))
    out.print(table)
    out.print(
        f"finished: {figures['finished_last_minute']} in the last minute, "
        f"{figures['finished_last_hour']} in the last hour"
    )
    if oldest is not None:
        out.print(f"oldest pending: {oldest.id} ({oldest.agent}), waiting {age(oldest.created_at)}")
    beat = ", ".join(f"{w.worker_id} ({_heartbeat(w.heartbeat_at)})" for w in live_workers)
    out.print(f"workers not stopped: {len(live_workers)}{': ' + beat if beat else ''}")
    if figures["unserved_agents"]:
        names = ", ".join(figures["unserved_agents"])
        out.print(f"[yellow]no worker serves agent {names}: its pending tasks wait for one[/]")


def _heartbeat(at: float) -> str:
    """How long ago a heartbeat was, or that it lies in the future (a clock ahead)."""
    ago = time.time() - at
    if ago < -1:
        return f"heartbeat {-ago:.0f}s in the future: its clock is ahead"
    return f"heartbeat {max(ago, 0):.0f}s ago"


def _seconds(now: datetime, task: Task) -> float:
    return round((now - task.created_at).total_seconds(), 3)


@main.command()
@db_option
@json_option
@run_async
async def verify(db: str | None, as_json: bool) -> None:
    """Recompute the hash chain and check the projection against the log.

    Exits 5 naming the first bad sequence number when the log was tampered with, and 10
    when the projection differs from the log (repair it with `tasktrail rebuild`).

    \b
    Example:
      tasktrail verify
      tasktrail verify --json > checkpoint.json   # keep head_sequence/head_hash elsewhere
    """
    out = console(stderr=True)
    async with open_existing(db) as store:
        with out.status("verifying the hash chain and the projection..."):
            report = await store.verify()
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
@run_async
async def rebuild(db: str | None) -> None:
    """Drop the task projection and replay it from the log.

    \b
    Example:
      tasktrail rebuild
    """
    async with open_existing(db) as store:
        with console(stderr=True).status("replaying the log..."):
            count = await store.rebuild()
    click.echo(f"rebuilt {count} task(s) from the log")


@main.command()
@db_option
@click.option(
    "--since",
    metavar="SEQ|TIME",
    default="0",
    show_default=True,
    help="Only events after this sequence number, or recorded at or after this time.",
)
@run_async
async def export(db: str | None, since: str) -> None:
    """Print the log as JSON lines, one event per line, in sequence order.

    \b
    Example:
      tasktrail export > events.jsonl
      tasktrail export --since 1200 >> events.jsonl
      tasktrail export --since 2026-11-21T08:00 | jq -c 'select(.type == "task.failed")'
    """
    after, moment = (int(since), None) if since.isdigit() else (0, parse_moment(since))
    async with open_existing(db) as store:
        while events := await store.read_all(after=after, limit=5000):
            for event in events:
                if moment is None or event.recorded_at >= moment:
                    emit_json(event)
            after = events[-1].sequence
