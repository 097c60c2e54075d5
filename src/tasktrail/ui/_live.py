"""Live updates: one follower of the log per dashboard, fanned out to every open page.

The :class:`Hub` reads the log after its position (``read_all``), waits for the next
commit when it has caught up (``wait_for_commit``: at once for this process's commits and,
on PostgreSQL, every process's; within ``poll_interval`` for another process's commits to
a SQLite file), and turns each batch into one :class:`Update`: the events, the tasks they
changed as they are now, and the counts per state when a state changed. Each open page
has a :class:`Listener` with a bounded queue; a page that cannot keep up is told to reload
rather than slow the others down.

The hub reads the log from its head at start and never saves a checkpoint: a dashboard
writes nothing to the database it watches. A page that connects late catches up from the
position it was rendered at (:meth:`Hub.catch_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tasktrail.errors import StoreClosedError, TasktrailError
from tasktrail.events import RecordedEvent
from tasktrail.lifecycle import Trigger
from tasktrail.projection import Task
from tasktrail.store import EventStore
from tasktrail.ui._queries import Reader

__all__ = ["Hub", "Listener", "Update"]

log = logging.getLogger("tasktrail.ui")

QUEUE_SIZE: Final = 256
"""Updates a listener may fall behind by before it is told to reload."""
BATCH: Final = 2000
"""Events read per update."""
MIN_GAP: Final = 0.05
"""Seconds between two updates at the least: a busy log gives fewer, larger updates."""
COUNTS_GAP: Final = 0.5
"""Seconds between two countings of the tasks per state at the least (each is a scan of
an index: about 6 ms at 100,000 tasks)."""


@dataclass
class Update:
    """One batch of the log, as every open page sees it."""

    head: int
    """The sequence number of the last event in it."""
    events: list[RecordedEvent]
    tasks: dict[str, Task]
    """The tasks these events changed, as they are now."""
    counts: dict[str, int] | None = None
    """Tasks per state, when one of the events changed a state."""
    cache: dict[Any, Any] = field(default_factory=dict)
    """What one page's rendering of this update computed for the others (keyed by it)."""


class Listener:
    """One open page's queue of updates; ``None`` ends it (reload, or shutting down)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

    def put(self, update: Update | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


_STILL: Final = frozenset({Trigger.ANNOTATE})


def changes_state(event: RecordedEvent) -> bool:
    """Whether an event may change a task's state (or count)."""
    return event.payload.trigger not in _STILL


class Hub:
    """Follows the log and hands every update to every listener."""

    def __init__(self, store: EventStore, reader: Reader, *, poll_interval: float = 0.25) -> None:
        self.store = store
        self.reader = reader
        self.poll_interval = poll_interval
        self.position = 0
        self.listeners: set[Listener] = set()
        self.closed = False
        self.updates = 0
        self._wake = asyncio.Event()
        self._counted = 0.0
        self._counts_due = False

    async def start(self) -> None:
        """Begin at the log's head."""
        self.position = await self.store.head()

    @contextlib.contextmanager
    def listen(self) -> Iterator[tuple[Listener, int]]:
        """A new listener, and the position from which it receives every update."""
        listener = Listener()
        if self.closed:
            listener.put(None)
        self.listeners.add(listener)
        try:
            yield listener, self.position
        finally:
            self.listeners.discard(listener)

    def close(self) -> None:
        """End every listener (the server is stopping); safe to call from a signal handler."""
        self.closed = True
        for listener in list(self.listeners):
            listener.put(None)
        self._wake.set()

    async def run(self) -> None:
        """Follow the log until cancelled or closed."""
        while not self.closed:
            try:
                events = await self.store.read_all(after=self.position, limit=BATCH)
                if not events:
                    if self._counts_due and time.monotonic() - self._counted >= COUNTS_GAP:
                        self._broadcast(await self.build([]))
                        continue
                    await self._idle()
                    continue
                if self.listeners:
                    update = await self.build(events)
                    self.position = update.head
                    self._broadcast(update)
                else:
                    self.position = events[-1].sequence
                if len(events) < BATCH:
                    await asyncio.sleep(MIN_GAP)
            except StoreClosedError:
                return
            except TasktrailError as err:  # busy, unreachable: try again shortly
                log.warning("following the log: %s", err)
                await self._idle()

    def _broadcast(self, update: Update) -> None:
        self.updates += 1
        for listener in list(self.listeners):
            listener.put(update)

    async def _idle(self) -> None:
        waiting = asyncio.ensure_future(self.store.wait_for_commit(self.poll_interval))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((waiting, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (waiting, woken):
                future.cancel()
            await asyncio.gather(waiting, woken, return_exceptions=True)

    async def build(self, events: Sequence[RecordedEvent]) -> Update:
        """The update for a batch of events: the tasks as they are now, and the counts
        when a state changed (or changed earlier and was not counted yet)."""
        ids = list(dict.fromkeys(event.stream_id for event in events))
        tasks = {task.id: task for task in await self.store.get_tasks(ids)} if ids else {}
        self._counts_due = self._counts_due or any(changes_state(e) for e in events)
        counts = None
        if self._counts_due and time.monotonic() - self._counted >= COUNTS_GAP:
            self._counts_due = False
            self._counted = time.monotonic()
            counts = await self.reader.state_counts()
        head = events[-1].sequence if events else self.position
        return Update(head, list(events), tasks, counts)

    async def catch_up(self, after: int, until: int, *, most: int) -> list[Update] | None:
        """The updates of the events in ``(after, until]`` for a page that connected late;
        ``None`` when there are more than ``most`` of them (the page should reload)."""
        if until - after > most:
            return None
        updates = []
        while after < until:
            read = await self.store.read_all(after=after, limit=BATCH)
            events = [event for event in read if event.sequence <= until]
            if not events:
                break
            updates.append(await self.build(events))
            after = events[-1].sequence
        return updates
