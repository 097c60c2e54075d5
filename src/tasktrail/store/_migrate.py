"""Numbered schema migrations: ``migrations/NNNN_name.sql``, applied in order, once.

``PRAGMA user_version`` holds the number of the last migration applied. Each migration
runs in its own ``BEGIN IMMEDIATE`` transaction that re-reads ``user_version`` under the
write lock, so several processes opening a new file at the same moment apply each
migration exactly once.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from importlib import resources

__all__ = ["migrations", "split_statements"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (trigger bodies stay whole)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text.strip())
            current = []
    if "".join(current).strip():
        raise ValueError(f"incomplete SQL statement: {''.join(current)[:80]!r}")
    return statements


@functools.cache
def migrations() -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(number, file name, statements) of every migration, in order."""
    found = []
    for entry in resources.files("tasktrail.store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match[1]), entry.name, tuple(split_statements(entry.read_text()))))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, got {numbers}")
    return tuple(found)
