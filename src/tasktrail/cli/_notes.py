"""Why pending tasks wait: their agent has no live worker, or it (or their concurrency key)
is paused. The lines ``ls``, ``show``, ``stats``, ``wait`` and ``logs --follow`` print."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from tasktrail.cli._format import age
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime._recovery import unserved_agents
from tasktrail.store import EventStore
from tasktrail.store._controls import Control

__all__ = ["pause_line", "paused_note", "pending_notes", "unserved_note"]


async def unserved_note(store: EventStore, tasks: Iterable[Task]) -> str | None:
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


def pause_line(pause: Control) -> str:
    """``agent shell is paused (by user:ann, 5m ago: deploy)``."""
    since = age(datetime.fromtimestamp(pause.timestamp, UTC))
    why = f": {pause.reason}" if pause.reason else ""
    return f"{pause.kind} {pause.target} is paused (by {pause.actor}, {since} ago{why})"


async def paused_note(store: EventStore, tasks: Iterable[Task]) -> list[str]:
    """A line per pause that holds back some of the pending ``tasks``."""
    pending = [t for t in tasks if t.state is TaskState.PENDING]
    if not pending:
        return []
    lines = []
    for pause in await store.list_pauses():
        held = [
            t for t in pending
            if (pause.kind == "agent" and t.agent == pause.target)
            or (pause.kind == "key" and t.limit_key == pause.target)
        ]  # fmt: skip
        if held:
            lines.append(
                f"{pause_line(pause)}: its pending tasks wait "
                f"(tasktrail resume --{pause.kind} {pause.target})"
            )
    return lines


async def pending_notes(store: EventStore, tasks: Iterable[Task]) -> list[str]:
    """Every note about why some of the pending ``tasks`` wait."""
    tasks = list(tasks)
    notes = await paused_note(store, tasks)
    if unserved := await unserved_note(store, tasks):
        notes.append(unserved)
    return notes
