"""What every reliability scenario shares: its size (CI or soak) and its figures.

``TASKTRAIL_SOAK=1`` switches every scenario to its long (soak) size; sizes can also be
set one by one with the environment variables each scenario names.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from checker import CheckReport, check

from tasktrail import SQLiteEventStore

__all__ = ["FIGURES", "SOAK", "Figures", "assert_clean", "size"]

SOAK = os.environ.get("TASKTRAIL_SOAK") == "1"

FIGURES: dict[str, dict[str, object]] = {}
"""Every scenario's figures, printed at the end of the run by the conftest."""


def size(name: str, ci: float, soak: float) -> float:
    """A scenario's size: ``$name`` if set, else the soak or the CI default."""
    value = os.environ.get(name)
    return float(value) if value else (soak if SOAK else ci)


class Figures:
    """Collects the scenarios' figures (counts), summed over their tests."""

    def add(self, scenario: str, **counts: object) -> None:
        """Add ``counts`` to ``scenario``'s figures (numbers are summed)."""
        row = FIGURES.setdefault(scenario, {})
        for key, value in counts.items():
            old = row.get(key)
            if isinstance(value, int | float) and isinstance(old, int | float):
                row[key] = old + value
            else:
                row[key] = value


def assert_clean(path: Path | str, **kwargs: Any) -> CheckReport:
    """Run the checker on ``path``; fail with its details unless every count is 0."""
    report = check(path, **kwargs)
    assert report.ok, "\n".join(report.details)
    return report


async def writer_pragma(store: SQLiteEventStore, pragma: str) -> Any:
    """Run ``PRAGMA pragma`` on the store's own writing connection (on its thread)."""

    def run(conn: sqlite3.Connection) -> Any:
        row = conn.execute(f"PRAGMA {pragma}").fetchone()
        return None if row is None else row[0]

    return await store._writer.call(run)
