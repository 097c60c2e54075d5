"""Clocks: the system's, and a fake one that tests move by hand.

Everything time-based in the runtime (timeouts, TTL, leases, backoff, polling) asks its
clock, so a test drives time with :meth:`FakeClock.advance` and never sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the runtime needs of a clock."""

    def time(self) -> float:
        """Unix time in seconds: what the log records. It may jump (NTP, a user)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never jump: what durations are judged by
        (leases, pauses, start timeouts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Wall-clock time and real sleeps."""

    def time(self) -> float:
        """Unix time in seconds."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to.

    ``sleep`` returns once :meth:`advance` has moved the time past its deadline; nothing
    waits in real time. Starts at ``start`` (default: 2026-01-01T00:00:00Z).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._wall_offset = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        """The fake wall-clock time (moved by :meth:`advance` and :meth:`jump`)."""
        return self._now + self._wall_offset

    def monotonic(self) -> float:
        """The fake monotonic time (moved by :meth:`advance` only)."""
        return self._now

    def jump(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (forward or back), as NTP or a user might:
        monotonic time, and every sleeper, stay where they are."""
        self._wall_offset += seconds

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake time has advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, wake every sleeper whose deadline passed, let them run."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        for _ in range(5):  # let woken tasks reach their next await
            await asyncio.sleep(0)
