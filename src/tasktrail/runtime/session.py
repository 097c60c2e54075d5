"""Run a task in an agent session, in the shape of the seed managers.

Per attempt, :class:`AgentSessionRunner` creates a session (recorded as the task's session
id), sends the task's prompt, and waits until the session is done: told by a pushed status
event (:meth:`AgentSessionRunner.handle_session_status`, the seeds' ``handleSessionStatus``)
or found by asking the client every ``poll_interval`` seconds, whichever comes first. A
done session's result is the task's result; an ``error`` status fails the attempt with
:class:`SessionFailedError`; a cancelled attempt aborts the session.

A scripted fake client for tests and demos is :class:`tasktrail.testing.ScriptedSession`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeAlias

from tasktrail.errors import SessionFailedError
from tasktrail.projection import Task
from tasktrail.runtime._settings import seconds
from tasktrail.runtime.context import RunContext, to_the_end

__all__ = [
    "AgentSession",
    "AgentSessionRunner",
    "DONE_STATUSES",
    "ERROR_STATUSES",
    "SessionStatus",
]

_log = logging.getLogger(__name__)

SessionStatus: TypeAlias = str | Mapping[str, Any]
"""A status as a str (``"running"``, ``"idle"``...) or as the seeds' status object
(``{"type": "error", "message": "..."}``), which may carry the error's text."""

DONE_STATUSES = frozenset({"idle", "completed"})
"""Statuses meaning the session finished its work (``idle`` is the seeds' signal)."""
ERROR_STATUSES = frozenset({"error", "failed"})
"""Statuses meaning the session failed. Every other status means it is still working."""


class AgentSession(Protocol):
    """What :class:`AgentSessionRunner` needs of an agent client (an adapter you write)."""

    async def create_session(self, task: Task) -> str:
        """Create a session for ``task``; return its id."""
        ...

    async def send_prompt(self, session_id: str, prompt: str) -> None:
        """Send the prompt; return once the session accepted it (is no longer idle)."""
        ...

    async def get_status(self, session_id: str) -> SessionStatus:
        """The session's current status."""
        ...

    async def get_result(self, session_id: str) -> Any:
        """The result of a done session (the task's result)."""
        ...

    async def abort(self, session_id: str) -> None:
        """Stop the session's work."""
        ...


def _error_text(value: Any) -> str | None:
    """The text of an error as agents report it: a str, or ``message``/``data.message``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        for key in ("message", "error", "data"):
            text = _error_text(value.get(key))
            if text:
                return text
        name = value.get("name")
        return str(name) if name else None
    return str(value)


def _parse(status: SessionStatus) -> tuple[str, str | None]:
    """``(type, error text)`` of a status."""
    if isinstance(status, str):
        return status.lower(), None
    kind = str(status.get("type", "")).lower()
    return kind, _error_text(status.get("message")) or _error_text(status.get("error"))


@dataclass(eq=False)
class _Watch:
    """One session a runner waits on: what it said since the prompt, and a wake-up.

    Statuses from before the prompt was sent say nothing about the prompt: a session is
    ``idle`` before it takes a prompt up (the seeds completed such tasks at once, with no
    output). Only an ``idle`` after the prompt's delivery ends the wait, and only once the
    session showed activity since the prompt was sent, or the idle outlasted the settle
    time.
    """

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    status: tuple[str, str | None] | None = None
    sending: bool = False
    """The prompt is being sent, or was sent."""
    delivered_at: float | None = None
    """``time.monotonic()`` when ``send_prompt`` returned."""
    active: bool = False
    """A working status was seen since the prompt began to be sent."""

    def update(self, status: tuple[str, str | None]) -> None:
        """Take a status, pushed or polled."""
        if not self.sending:
            return  # before the prompt: stale
        kind = status[0]
        if kind not in DONE_STATUSES and kind not in ERROR_STATUSES:
            self.active = True
        if kind in DONE_STATUSES and self.delivered_at is None:
            return  # idle while the prompt is still being delivered: not an answer
        self.status = status


class AgentSessionRunner:
    """Runs each attempt of a task in a new agent session.

    Args:
        client: the agent client (see :class:`AgentSession`).
        poll_interval: seconds between status checks with ``client.get_status``; pushed
            status events end the wait sooner.
        settle_time: seconds an ``idle`` reported after the prompt's delivery must last,
            when the session showed no activity since the prompt, before it counts as done
            (an idle that follows activity counts at once).

    Feed the agent's events to :meth:`handle_session_status`. A working status that
    arrives while the prompt is being sent counts as activity, so a fast session is not
    missed; an ``idle`` from before the prompt's delivery never ends the task.
    """

    manages_start: ClassVar[bool] = True
    """This runner records the start itself, with the session's id."""

    def __init__(
        self, client: AgentSession, *, poll_interval: float = 2.0, settle_time: float = 2.0
    ) -> None:
        self.client = client
        self.poll_interval = seconds("poll_interval", poll_interval, positive=True)
        self.settle_time = seconds("settle_time", settle_time)
        self._watches: dict[str, _Watch] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r}, poll_interval={self.poll_interval:g})"

    def handle_session_status(self, event: Mapping[str, Any]) -> bool:
        """Take a pushed session event; return whether it concerned a session waited on.

        Understood (others are ignored): ``{"type": "session.status", "properties":
        {"sessionID": ..., "status": {"type": "idle" | "error" | ...}}}``, and the older
        ``session.idle`` and ``session.error`` events. Call it on the event loop's thread.
        """
        kind = event.get("type")
        properties = event.get("properties")
        if not isinstance(properties, Mapping):
            return False
        watch = self._watches.get(str(properties.get("sessionID")))
        if watch is None:
            return False
        if kind == "session.status":
            status = properties.get("status")
            if not isinstance(status, str | Mapping):
                return False
            watch.update(_parse(status))
        elif kind == "session.idle":
            watch.update(("idle", None))
        elif kind == "session.error":
            watch.update(("error", _error_text(properties.get("error"))))
        else:
            return False
        watch.changed.set()
        return True

    async def __call__(self, ctx: RunContext) -> Any:
        """Run one attempt: create the session, send the prompt, wait, fetch the result."""
        session_id = await self.client.create_session(ctx.task)
        watch = self._watches[session_id] = _Watch()
        ended = False
        try:
            await ctx.started(session_id)
            watch.sending = True
            await self.client.send_prompt(session_id, ctx.task.prompt)
            watch.delivered_at = time.monotonic()
            kind, detail = await self._wait_done(session_id, watch)
            ended = True
            if kind in ERROR_STATUSES:
                raise SessionFailedError(session_id, kind, detail)
            return await self.client.get_result(session_id)
        except BaseException:
            if not ended:  # cancelled, or the client failed: the session may still work
                await _abort(self.client, session_id)
            raise
        finally:
            self._watches.pop(session_id, None)

    async def _wait_done(self, session_id: str, watch: _Watch) -> tuple[str, str | None]:
        """Wait for an error status, or a done status that answers the prompt (see
        :class:`_Watch`), pushed or polled."""
        assert watch.delivered_at is not None
        while True:
            watch.changed.clear()
            status = watch.status
            wait = self.poll_interval
            if status is not None and status[0] in ERROR_STATUSES:
                return status
            if status is not None and status[0] in DONE_STATUSES:
                unsettled = self.settle_time - (time.monotonic() - watch.delivered_at)
                if watch.active or unsettled <= 0:
                    return status
                wait = min(wait, unsettled)
            try:
                async with asyncio.timeout(wait):
                    await watch.changed.wait()
            except TimeoutError:
                watch.update(_parse(await self.client.get_status(session_id)))


async def _abort(client: AgentSession, session_id: str) -> None:
    """Abort the session to the end, even if cancelled again; a failure is logged.

    A cancel that arrived meanwhile is raised afterwards, never swallowed.
    """
    try:
        await to_the_end(client.abort(session_id))
    except Exception:
        _log.warning("aborting agent session %r failed", session_id, exc_info=True)
