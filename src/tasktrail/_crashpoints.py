"""Named crash points for the reliability suite: a no-op unless a test arms one.

Each write step of the store and the runtime calls :func:`crash_point` with its name (see
:data:`POINTS`). Two ways to arm a point, both for tests only:

* ``TASKTRAIL_CRASH_AT=name`` (or ``name:nth``) in a process's environment when tasktrail
  is imported: the ``nth`` time (default 1) that point is reached, the process sends
  itself ``SIGKILL`` (a kill -9 at a chosen instruction, nothing flushed, no cleanup).
* :func:`set_hook`: a function called with the point's name each time a point is reached,
  in-process (it may raise an exception or cancel a task to inject a fault there).

When neither is set, a crash point costs one global lookup and a comparison.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Final

__all__ = ["POINTS", "crash_point", "set_hook"]

POINTS: Final = (
    "commit.before_begin",
    "commit.after_begin",
    "commit.after_insert",
    "commit.before_commit",
    "commit.after_commit",
    "recovery.before_decide",
    "recovery.after_decide",
    "runtime.after_claim",
    "runtime.before_finish",
    "runtime.after_finish",
)
"""Every crash point, in the order a task's life reaches them."""

_Hook = Callable[[str], None]


class _Armed:
    """The point the environment armed, and how many times it was reached."""

    __slots__ = ("name", "nth", "seen")

    def __init__(self, spec: str) -> None:
        name, _, nth = spec.partition(":")
        if name not in POINTS:
            raise ValueError(f"TASKTRAIL_CRASH_AT={spec!r}: unknown point; one of {POINTS}")
        self.name, self.nth, self.seen = name, int(nth or 1), 0


_spec = os.environ.get("TASKTRAIL_CRASH_AT")
_armed: _Armed | None = _Armed(_spec) if _spec else None
_hook: _Hook | None = None


def set_hook(hook: _Hook | None) -> _Hook | None:
    """Call ``hook(name)`` at every crash point (``None`` removes it); returns the old one."""
    global _hook
    old, _hook = _hook, hook
    return old


def crash_point(name: str) -> None:
    """Mark a write step; kills the process or calls the hook only when a test armed it."""
    if _hook is None and _armed is None:
        return
    if _hook is not None:
        _hook(name)
    if _armed is not None and _armed.name == name:
        _armed.seen += 1
        if _armed.seen == _armed.nth:
            os.kill(os.getpid(), signal.SIGKILL)
