"""Helpers for testing code that uses tasktrail: a clock that moves only when told, and an
agent client that follows a script."""

from tasktrail.runtime._scripted import ScriptedReply, ScriptedSession, ScriptedSessionState
from tasktrail.runtime.clock import FakeClock

__all__ = ["FakeClock", "ScriptedReply", "ScriptedSession", "ScriptedSessionState"]
