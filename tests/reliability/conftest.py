"""Reliability fixtures: the figures every scenario reports, printed at the end of the run.

``TASKTRAIL_SOAK=1`` switches every scenario to its long (soak) size; sizes can also be
set one by one with the environment variables each scenario names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from checker import CheckReport, check

SOAK = os.environ.get("TASKTRAIL_SOAK") == "1"

_FIGURES: dict[str, dict[str, object]] = {}


def size(name: str, ci: float, soak: float) -> float:
    """A scenario's size: ``$name`` if set, else the soak or the CI default."""
    value = os.environ.get(name)
    return float(value) if value else (soak if SOAK else ci)


class Figures:
    """Collects one scenario's figures (counts), summed over its tests."""

    def add(self, scenario: str, **counts: object) -> None:
        """Add ``counts`` to ``scenario``'s figures (numbers are summed)."""
        row = _FIGURES.setdefault(scenario, {})
        for key, value in counts.items():
            old = row.get(key)
            if isinstance(value, int | float) and isinstance(old, int | float):
                row[key] = old + value
            else:
                row[key] = value


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The session's figure collector."""
    return Figures()


def assert_clean(path: Path | str, **kwargs: object) -> CheckReport:
    """Run the checker on ``path`` and fail with its details unless every count is 0."""
    report = check(path, **kwargs)  # type: ignore[arg-type]
    assert report.ok, "\n".join(report.details)
    return report


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    """Write the figures as JSON to ``$TASKTRAIL_FIGURES`` at the end, when it is set."""
    yield
    target = os.environ.get("TASKTRAIL_FIGURES")
    if target and _FIGURES:
        Path(target).write_text(json.dumps(_FIGURES, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every scenario's figures at the end of the run."""
    if not _FIGURES:
        return
    mode = "soak" if SOAK else "ci"
    terminalreporter.section(f"reliability figures ({mode} mode)")
    for scenario in sorted(_FIGURES):
        row = _FIGURES[scenario]
        text = ", ".join(f"{key}={value}" for key, value in row.items())
        terminalreporter.write_line(f"{scenario:<28} {text}")
