"""Reliability fixtures: the figures collector, and the figures printed after the run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario import FIGURES, SOAK, Figures


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The session's figure collector."""
    return Figures()


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    """Write the figures as JSON to ``$TASKTRAIL_FIGURES`` at the end, when it is set."""
    yield
    target = os.environ.get("TASKTRAIL_FIGURES")
    if target and FIGURES:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every scenario's figures at the end of the run."""
    if not FIGURES:
        return
    terminalreporter.section(f"reliability figures ({'soak' if SOAK else 'ci'} mode)")
    for scenario in sorted(FIGURES):
        text = ", ".join(f"{key}={value}" for key, value in FIGURES[scenario].items())
        terminalreporter.write_line(f"{scenario:<24} {text}")
