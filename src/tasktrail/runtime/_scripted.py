"""A scripted agent client: :class:`ScriptedSession`, for tests and demos, not production."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tasktrail.projection import Task
from tasktrail.runtime.session import SessionStatus

__all__ = ["ScriptedReply", "ScriptedSession", "ScriptedSessionState"]


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
