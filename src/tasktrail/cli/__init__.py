"""The ``tasktrail`` command line, built on the public API only."""

from tasktrail.cli._main import main

__all__ = ["main"]
