"""Checking one range of the hash chain, so a long log can be verified on several cores.

Each event's hash covers the *stored* hash of the event before it, so every event can be
checked on its own once that stored hash is read: ``sha256(stored(n-1), header(n),
data(n)) == stored(n)``. Until the first event that fails, the stored hashes equal the
recomputed ones, so the first failure found range by range is exactly the one a single
pass finds. :func:`check_range` checks ``first..last`` with stdlib ``sqlite3``; run as
``python -m tasktrail.store._verify_range PATH FIRST LAST`` it prints its result as JSON,
which is how :func:`tasktrail.store._sqlite_scan.verify_chain` spreads a long log over
the machine's cores.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from typing import NamedTuple

from tasktrail.store._chain import GENESIS, MISSING, walk_chain

__all__ = ["EVENT_COLUMNS", "RangeResult", "check_range"]

EVENT_COLUMNS = (
    "seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, reason, "
    "correlation_id, CAST(data AS BLOB), hash"
)
"""The columns of an event row, in the order the hash covers them, payload as bytes (the
SQLite store reads them from here too: this module must import little, it runs alone)."""


class RangeResult(NamedTuple):
    """What checking ``first..last`` found."""

    good: int
    """Events checked and found good, from ``first`` on."""
    last_hash: str
    """The hash of the last good event (of ``first - 1``'s stored hash if none)."""
    bad: int | None = None
    """The first bad or missing sequence number, if any."""
    why: str | None = None


def check_range(path: str, first: int, last: int) -> RangeResult:
    """Check events ``first..last`` of the log at ``path`` (``last`` must exist)."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA query_only = ON")
        previous = GENESIS
        if first > 1:
            row = db.execute("SELECT hash FROM events WHERE seq = ?", (first - 1,)).fetchone()
            # A missing predecessor is reported by the range before this one.
            previous = row[0] if row is not None else ""
        rows = db.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first, last),
        )
        walk = walk_chain(rows, previous=previous, expected=first)
        if walk.bad is not None:
            return RangeResult(walk.good, walk.last_hash, walk.bad, walk.why)
        if walk.expected != last + 1:
            return RangeResult(walk.good, walk.last_hash, walk.expected, MISSING)
        return RangeResult(walk.good, walk.last_hash)
    finally:
        db.close()


def main(argv: list[str]) -> int:
    path, first, last = argv[0], int(argv[1]), int(argv[2])
    print(json.dumps(check_range(path, first, last)._asdict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
