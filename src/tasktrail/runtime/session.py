"""Run a task in an agent session, in the shape of the seed managers.

Per attempt, :class:`AgentSessionRunner` creates a session (recorded as the task's session
id), sends the task's prompt, and waits until the session is done: told by a pushed status
event (:meth:`AgentSessionRunner.handle_session_status`, the seeds' ``handleSessionStatus``)
or found by asking the client every ``poll_interval`` seconds, whichever comes first. A
done session's result is the task's result; an ``error`` status fails the attempt with
:class:`SessionFailedError`; a cancelled attempt aborts the session.

:class:`ScriptedSession` is a fake client for tests and demos.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
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
    "ScriptedReply",
    "ScriptedSessionState",
    "ScriptedSession",
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


# -- a fake client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedReply:
    """How a :class:`ScriptedSession` answers one prompt.

    Args:
        result: what ``get_result`` returns once the session is done.
        error: when given, the session ends with an ``error`` status carrying this text.
        polls: how many ``get_status`` calls answer ``"running"`` before the final status.
        push: whether the session pushes ``busy`` and then its final status to the
            subscribers, at once after the prompt was sent (otherwise the final status is
            only found by polling).
        hang: the session never ends by itself (until aborted): for cancel tests.
    """

    result: Any = None
    error: str | None = None
    polls: int = 0
    push: bool = True
    hang: bool = False


_DEFAULT_REPLY = ScriptedReply()


@dataclass(eq=False)
class ScriptedSessionState:
    """One session of a :class:`ScriptedSession`, as tests inspect it."""

    session_id: str
    task_id: str
    prompt: str | None = None
    reply: ScriptedReply | None = None
    polls_left: int = 0
    aborted: bool = False


class ScriptedSession:
    """A fake agent client that follows a script: for tests and demos, not production.

    ``ScriptedSession({"summarise": ScriptedReply(result="short")})`` answers the prompt
    ``"summarise"`` with ``"short"``; other prompts get ``default`` (``None`` refuses them).
    Both ways of noticing completion are deterministic: ``polls`` counts the ``get_status``
    answers ``"running"`` before the final status, and with ``push`` the final status event
    goes to every subscriber (``subscribe(runner.handle_session_status)``) right after
    ``send_prompt`` returns. ``calls`` records every call as ``(method, session_id)``;
    ``sessions`` holds each session's state; :meth:`push` sends any event by hand.
    """

    def __init__(
        self,
        replies: Mapping[str, ScriptedReply] | None = None,
        *,
        default: ScriptedReply | None = _DEFAULT_REPLY,
    ) -> None:
        self.replies = dict(replies or {})
        self.default = default
        self.sessions: dict[str, ScriptedSessionState] = {}
        self.calls: list[tuple[str, str]] = []
        self._subscribers: list[Callable[[dict[str, Any]], object]] = []
        self._ids = itertools.count(1)

    def subscribe(self, listener: Callable[[dict[str, Any]], object]) -> None:
        """Send every pushed event to ``listener`` (such as ``runner.handle_session_status``)."""
        self._subscribers.append(listener)

    def push(self, session_id: str, status: SessionStatus) -> None:
        """Push a ``session.status`` event for ``session_id`` to every subscriber now."""
        body = {"type": status} if isinstance(status, str) else dict(status)
        event = {"type": "session.status", "properties": {"sessionID": session_id, "status": body}}
        for listener in list(self._subscribers):
            listener(event)

    def _state(self, method: str, session_id: str) -> ScriptedSessionState:
        self.calls.append((method, session_id))
        state = self.sessions.get(session_id)
        if state is None:
            raise KeyError(f"no scripted session {session_id!r}")
        return state

    def _final(self, state: ScriptedSessionState) -> SessionStatus:
        if state.aborted:
            return {"type": "error", "message": "aborted"}
        reply = state.reply
        if reply is None:
            return "idle"
        if reply.hang or state.polls_left > 0:
            return "running"
        if reply.error is not None:
            return {"type": "error", "message": reply.error}
        return "idle"

    async def create_session(self, task: Task) -> str:
        """A new session, ``ses_1``, ``ses_2``..."""
        session_id = f"ses_{next(self._ids)}"
        self.sessions[session_id] = ScriptedSessionState(session_id, task.id)
        self.calls.append(("create_session", session_id))
        return session_id

    async def send_prompt(self, session_id: str, prompt: str) -> None:
        """Start the scripted reply for ``prompt``; raise KeyError for an unscripted one."""
        state = self._state("send_prompt", session_id)
        reply = self.replies.get(prompt, self.default)
        if reply is None:
            raise KeyError(f"no scripted reply for prompt {prompt!r}")
        state.prompt, state.reply, state.polls_left = prompt, reply, reply.polls
        if reply.push and not reply.hang:
            final = "idle" if reply.error is None else {"type": "error", "message": reply.error}
            loop = asyncio.get_running_loop()
            loop.call_soon(self.push, session_id, "busy")  # the prompt was taken up
            loop.call_soon(self.push, session_id, final)

    async def get_status(self, session_id: str) -> SessionStatus:
        """``"running"`` for the scripted number of polls, then the final status."""
        state = self._state("get_status", session_id)
        status = self._final(state)
        if state.polls_left > 0:
            state.polls_left -= 1
        return status

    async def get_result(self, session_id: str) -> Any:
        """The scripted result."""
        state = self._state("get_result", session_id)
        return None if state.reply is None else state.reply.result

    async def abort(self, session_id: str) -> None:
        """Mark the session aborted."""
        self._state("abort", session_id).aborted = True
