"""Progress of the long passes over the whole log (verify, rebuild, check_projection), for
whoever asked: the command line draws its progress bars from it.

A caller sets a callback for the current context with :func:`reporting`; the passes call
:func:`advance` with the number of events they just read. Without a callback, a call costs
a context-variable lookup per chunk of thousands of events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["advance", "reporting"]

_callback: ContextVar[Callable[[int], None] | None] = ContextVar("tasktrail_progress", default=None)


def advance(events: int) -> None:
    """Report that ``events`` more events of the log were read (a no-op unless asked)."""
    callback = _callback.get()
    if callback is not None:
        callback(events)


@contextlib.contextmanager
def reporting(callback: Callable[[int], None]) -> Iterator[None]:
    """Call ``callback(events)`` as the passes run in this context read the log."""
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)
