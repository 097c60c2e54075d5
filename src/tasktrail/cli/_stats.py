"""``tasktrail stats``: the database at a glance, from aggregate queries (fast on any log)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final

import click
from rich.table import Table
from rich.text import Text

from tasktrail.cli._app import (
    console,
    db_option,
    emit_json,
    json_option,
    main,
    open_existing,
    run_async,
)
from tasktrail.cli._format import STATE_COLOURS, age
from tasktrail.cli._json import iso
from tasktrail.cli._metrics import database_families, render
from tasktrail.cli._notes import pause_line
from tasktrail.lifecycle import TaskState
from tasktrail.runtime._recovery import looks_live, unserved_agents
from tasktrail.store import EventStore

__all__: list[str] = []

RUN_SAMPLE: Final = 10_000
"""The most finished tasks of the last hour whose run times ``stats`` reads."""


@main.command()
@db_option
@json_option
@click.option(
    "--prometheus", is_flag=True,
    help="Print the figures in Prometheus' text format (for a textfile collector).",
)  # fmt: skip
@run_async
async def stats(db: str | None, as_json: bool, prometheus: bool) -> None:
    """Counts per state and agent, throughput and run times, the oldest pending task, the
    workers, the pauses in force, and the agents no live worker serves.

    Every figure comes from the task table's indexes, never from the log: stats reads no
    event, and its cost grows with the number of tasks (one pass over an index), not with
    their events or output. Run times are read from at most the 10,000 latest tasks
    finished in the last hour.

    \b
    Example:
      tasktrail stats
      tasktrail stats --json | jq .states
      tasktrail stats --prometheus > /var/lib/node_exporter/tasktrail.prom
    """
    if as_json and prometheus:
        raise click.UsageError("give --json or --prometheus, not both")
    async with open_existing(db) as store:
        if prometheus:
            click.echo(render(await database_families(store)), nl=False)
            return
        figures = await _figures(store)
    if as_json:
        emit_json(figures)
        return
    _print(figures)


async def _figures(store: EventStore) -> dict[str, Any]:
    now = time.time()
    counts = await store.task_counts()
    head = await store.head()
    workers = await store.list_workers()
    pauses = await store.list_pauses()
    by_state = {s.value: 0 for s in TaskState}
    for states in counts.values():
        for state, count in states.items():
            by_state[state] = by_state.get(state, 0) + count
    oldest_list = await store.list_tasks(state="pending", limit=1)
    oldest = oldest_list[0] if oldest_list else None
    recent = await store.list_tasks(
        only_finished_since=now - 3600, sort="updated", newest_first=True, limit=RUN_SAMPLE
    )
    runs = sorted(
        (t.finished_at - t.started_at).total_seconds()
        for t in recent
        if t.started_at is not None and t.finished_at is not None
    )
    pending_agents = {agent for agent, states in counts.items() if states.get("pending")}
    return {
        "tasks": sum(by_state.values()),
        "events": head,
        "states": by_state,
        "agents": counts,
        "finished_last_minute": await store.count_tasks(only_finished_since=now - 60),
        "finished_last_hour": await store.count_tasks(only_finished_since=now - 3600),
        "run_seconds_last_hour": {
            "count": len(runs),
            "p50": _quantile(runs, 0.5),
            "p95": _quantile(runs, 0.95),
            "max": runs[-1] if runs else None,
        },
        "oldest_pending": None
        if oldest is None
        else {
            "id": oldest.id,
            "agent": oldest.agent,
            "created_at": iso(oldest.created_at),
            "age_s": round(now - oldest.created_at.timestamp(), 3),
        },
        "workers_running": [
            {
                "worker_id": w.worker_id,
                "host": w.host,
                "pid": w.pid,
                "started_at": iso(w.started_at),
                "heartbeat_at": iso(w.heartbeat_at),
                "agents": None if w.agents is None else list(w.agents),
                "live": looks_live(w, now=now),
            }
            for w in workers
            if w.stopped_at is None
        ],
        "paused": pauses,
        "unserved_agents": sorted(unserved_agents(pending_agents, workers, now=now)),
    }


def _quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (nearest rank), ``None`` when empty."""
    if not values:
        return None
    return round(values[min(len(values) - 1, max(0, round(q * len(values)) - 1))], 3)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    return age(datetime.fromtimestamp(0, UTC), datetime.fromtimestamp(value, UTC))


def _print(figures: dict[str, Any]) -> None:
    out = console()
    table = Table(title=f"{figures['tasks']:,} tasks, {figures['events']:,} events")
    table.add_column("agent", no_wrap=True, overflow="ellipsis", max_width=24)
    for s in TaskState:
        table.add_column(s.value, justify="right", no_wrap=True, style=STATE_COLOURS[s.value])
    for agent, counts in figures["agents"].items():
        table.add_row(Text(agent), *(f"{counts.get(s.value, 0):,}" for s in TaskState))
    table.add_row(
        Text("all", style="bold"), *(f"{figures['states'].get(s.value, 0):,}" for s in TaskState)
    )
    out.print(table)
    runs = figures["run_seconds_last_hour"]
    out.print(
        f"finished: {figures['finished_last_minute']:,} in the last minute, "
        f"{figures['finished_last_hour']:,} in the last hour"
        + (
            f"; run time p50 {_seconds(runs['p50'])}, p95 {_seconds(runs['p95'])}, "
            f"max {_seconds(runs['max'])}"
            if runs["count"]
            else ""
        )
    )
    oldest = figures["oldest_pending"]
    if oldest is not None:
        waited = _seconds(oldest["age_s"])
        out.print(Text(f"oldest pending: {oldest['id']} ({oldest['agent']}), waiting {waited}"))
    workers = figures["workers_running"]
    beats = ", ".join(
        f"{w['worker_id']} ({_heartbeat(w['heartbeat_at'])}"
        + ("" if w["live"] else ", looks dead")
        + ")"
        for w in workers
    )
    out.print(Text(f"workers not stopped: {len(workers)}{': ' + beats if beats else ''}"))
    for pause in figures["paused"]:
        out.print(Text(pause_line(pause), style="yellow"))
    if figures["unserved_agents"]:
        names = ", ".join(figures["unserved_agents"])
        out.print(
            Text(f"no worker serves agent {names}: its pending tasks wait for one", style="yellow")
        )


def _heartbeat(at: str) -> str:
    """How long ago a heartbeat was, or that it lies in the future (a clock ahead)."""
    ago = time.time() - datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    if ago < -1:
        return f"heartbeat {-ago:.0f}s in the future: its clock is ahead"
    return f"heartbeat {max(ago, 0):.0f}s ago"
