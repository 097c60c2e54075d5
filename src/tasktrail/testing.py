"""Helpers for testing code that uses tasktrail: a clock that moves only when told."""

from tasktrail.runtime.clock import FakeClock

__all__ = ["FakeClock"]
