"""The ``tasktrail`` command line, built on the public API only."""

from tasktrail.cli import _demo, _inspect, _mcp, _work  # noqa: F401  (they register commands)
from tasktrail.cli._app import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
