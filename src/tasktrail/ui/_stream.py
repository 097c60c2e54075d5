"""Server-sent events: each open page's share of the hub's updates.

A task list receives ``tasks`` messages: every task an update changed, as a row, marked
with whether it passes the page's filter, and the counts per state. A task's page
receives ``task`` messages for its own events only: the new events, their output, the
header and the timeline recomputed. ``reload`` tells a page it fell too far behind and
should load itself again; ``bye`` that the dashboard is stopping.

The messages for one update are encoded once and shared by every page that wants the
same thing (20 open lists with no filter cost one encoding).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol

import msgspec

from tasktrail.events import OutputAppended, RecordedEvent
from tasktrail.store import EventStore
from tasktrail.ui._live import Hub, Update
from tasktrail.ui._queries import TaskFilter
from tasktrail.ui._timeline import timeline
from tasktrail.ui._views import event_row, task_header, task_row

__all__ = ["ListView", "TaskView", "View", "sse"]

KEEPALIVE: Final = 15.0
"""Seconds of silence after which a comment line keeps the connection open."""
MAX_CATCH_UP: Final = 20_000
"""Events a page may have missed before it is told to reload instead."""

_encode = msgspec.json.Encoder().encode


class View(Protocol):
    """What one open page wants from each update."""

    async def messages(self, update: Update) -> list[tuple[str, bytes]]: ...


class ListView:
    """A task list, with its filter."""

    def __init__(self, where: TaskFilter) -> None:
        self.where = where

    async def messages(self, update: Update) -> list[tuple[str, bytes]]:
        key = ("list", self.where)
        data = update.cache.get(key)
        if data is None:
            rows = []
            for task in sorted(update.tasks.values(), key=lambda t: t.created_at):
                row = task_row(task)
                row["match"] = self.where.matches(task)
                rows.append(row)
            data = _encode({"head": update.head, "tasks": rows, "counts": update.counts})
            update.cache[key] = data
        return [("tasks", data)]


class TaskView:
    """One task's page."""

    def __init__(self, store: EventStore, task_id: str) -> None:
        self.store = store
        self.task_id = task_id
        self.history: list[RecordedEvent] = []
        """The task's events so far: read once, then extended by each update's."""

    async def _history(self, mine: list[RecordedEvent]) -> list[RecordedEvent]:
        last = self.history[-1].version if self.history else 0
        new = [event for event in mine if event.version > last]
        if self.history and new and new[0].version == last + 1:
            self.history.extend(new)
        elif new or not self.history:  # the first update, or one this page did not see
            self.history = await self.store.history(self.task_id)
        return self.history

    async def messages(self, update: Update) -> list[tuple[str, bytes]]:
        mine = [event for event in update.events if event.stream_id == self.task_id]
        task = update.tasks.get(self.task_id)
        if not mine or task is None:
            return []
        key = ("task", self.task_id)
        history = await self._history(mine)
        data = update.cache.get(key)
        if data is None:
            now = time.time()
            line = timeline(history)
            payload: dict[str, Any] = {
                "head": update.head,
                "header": task_header(task, line, now),
                "events": [_with_output(event) for event in mine],
                "timeline": {**line.as_json(), "now": now},
                "last_version": task.version,
            }
            data = _encode(payload)
            update.cache[key] = data
        return [("task", data)]


def _with_output(event: RecordedEvent) -> dict[str, Any]:
    row = event_row(event)
    if isinstance(event.payload, OutputAppended):
        row["output"] = event.payload.text
        row["channel"] = event.payload.channel
    return row


def _message(name: str, data: bytes, head: int) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name.encode(), head, data)


async def sse(hub: Hub, view: View, after: int | None) -> AsyncIterator[bytes]:
    """The event stream of one page that has seen the log up to ``after``."""
    with hub.listen() as (listener, position):
        yield b"retry: 2000\n\n"
        if after is not None and after < position:
            updates = await hub.catch_up(after, position, most=MAX_CATCH_UP)
            if updates is None:
                yield _message("reload", b"{}", position)
                return
            for missed in updates:
                for name, data in await view.messages(missed):
                    yield _message(name, data, missed.head)
        yield _message("ready", b"{}", position)
        while True:
            try:
                update = await asyncio.wait_for(listener.queue.get(), KEEPALIVE)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if update is None:  # the dashboard is stopping, or this page fell behind
                yield _message("bye" if hub.closed else "reload", b"{}", hub.position)
                return
            for name, data in await view.messages(update):
                yield _message(name, data, update.head)
