"""Checkpointed subscribers: follow the log, resume where they stopped after a restart."""

from __future__ import annotations

import collections

from tasktrail.events import RecordedEvent
from tasktrail.store.base import EventStore

__all__ = ["Subscription"]


class Subscription:
    """Follows the log from a durable checkpoint, delivering each event at least once.

    Iterate it with ``async for``. An event counts as handled once the loop asks for the
    next one; the checkpoint is saved before each new batch is read, so after a crash the
    subscriber resumes just after the last batch it finished (events of an unfinished
    batch are delivered again: make the handler idempotent, e.g. by ``event_id``).
    The iteration never ends by itself; break out of it or cancel it.
    Call :meth:`commit` to save the checkpoint at once (e.g. before stopping).
    """

    def __init__(
        self, store: EventStore, name: str, *, batch_size: int = 500, poll_interval: float = 0.5
    ) -> None:
        if not name or not name.isprintable():
            raise ValueError(f"invalid subscription name {name!r}")
        self.name = name
        self._store = store
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._buffer: collections.deque[RecordedEvent] = collections.deque()
        self._position: int | None = None  # last event handed out
        self._saved: int | None = None

    @property
    def position(self) -> int | None:
        """The sequence number of the last event delivered, once started."""
        return self._position

    async def commit(self) -> None:
        """Save the checkpoint: every event delivered so far counts as handled."""
        if self._position is not None and self._position != self._saved:
            await self._store.save_checkpoint(self.name, self._position)
            self._saved = self._position

    async def _fetch(self) -> list[RecordedEvent]:
        """Save the checkpoint (the last batch is done), then read the next batch."""
        if self._position is None:
            self._position = self._saved = await self._store.load_checkpoint(self.name)
        await self.commit()
        return await self._store.read_all(after=self._position, limit=self._batch_size)

    async def poll(self) -> list[RecordedEvent]:
        """The next batch after the position, without waiting (may be empty)."""
        events = await self._fetch()
        if events:
            self._position = events[-1].sequence
        return events

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        while not self._buffer:
            events = await self._fetch()
            if events:
                self._buffer.extend(events)
                break
            await self._store.wait_for_commit(self._poll_interval)
        event = self._buffer.popleft()
        self._position = event.sequence
        return event
