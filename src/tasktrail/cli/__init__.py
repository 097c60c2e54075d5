"""The ``tasktrail`` command line, built on the public API only."""

from tasktrail.cli import (  # noqa: F401  (they register commands)
    _cancel,
    _control,
    _demo,
    _inspect,
    _ls,
    _mcp,
    _stats,
    _ui,
    _work,
    _worker,
)
from tasktrail.cli._app import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
