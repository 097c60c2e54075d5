"""The asyncio runtime: TaskManager, run contexts, runners, clocks, recovery."""

from tasktrail.runtime.blocking import Client
from tasktrail.runtime.client import AsyncClient
from tasktrail.runtime.clock import Clock, FakeClock, SystemClock
from tasktrail.runtime.context import RunContext, Runner
from tasktrail.runtime.manager import TaskManager
from tasktrail.runtime.registry import Registry
from tasktrail.runtime.session import AgentSession, AgentSessionRunner
from tasktrail.runtime.subprocess import SubprocessRunner

__all__ = [
    "AgentSession",
    "AgentSessionRunner",
    "AsyncClient",
    "Client",
    "Clock",
    "FakeClock",
    "Registry",
    "RunContext",
    "Runner",
    "SubprocessRunner",
    "SystemClock",
    "TaskManager",
]
