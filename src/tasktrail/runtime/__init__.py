"""The asyncio runtime: TaskManager, run contexts, runners, clocks, recovery."""

from tasktrail.runtime.clock import Clock, FakeClock, SystemClock
from tasktrail.runtime.context import RunContext, Runner
from tasktrail.runtime.manager import TaskManager

__all__ = ["Clock", "FakeClock", "RunContext", "Runner", "SystemClock", "TaskManager"]
