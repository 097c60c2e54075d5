"""Whole-log passes over an SQLite event log: chain verification and folding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import aiosqlite

from tasktrail.events import RecordedEvent
from tasktrail.store._plan import TaskRow
from tasktrail.store._scan import check_chain, fold_rows
from tasktrail.store.base import VerifyReport

__all__ = ["EVENT_COLUMNS", "fold_log", "scan", "verify_chain"]

EVENT_COLUMNS: Final = (
    "seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, reason, "
    "correlation_id, CAST(data AS BLOB), hash"
)
"""The columns of an event row, in the order the hash covers them, payload as bytes."""
_APPEND_ONLY_TRIGGERS: Final = frozenset({"events_append_only_update", "events_append_only_delete"})


async def scan(db: aiosqlite.Connection, chunk: int = 20_000) -> AsyncIterator[list[Any]]:
    """Every event row in sequence order, in chunks."""
    after = 0
    while True:
        rows = list(
            await db.execute_fetchall(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, chunk),
            )
        )
        if not rows:
            return
        yield rows
        after = rows[-1][0]


async def verify_chain(db: aiosqlite.Connection) -> VerifyReport:
    """Recompute the hash chain; raise TamperedLogError at the first bad or missing event."""
    count, head, head_hash = await check_chain(scan(db))
    triggers = {
        row[0]
        for row in await db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        )
    }
    return VerifyReport(
        events=count,
        head_sequence=head,
        head_hash=head_hash,
        append_only=triggers >= _APPEND_ONLY_TRIGGERS,
    )


async def fold_log(
    db: aiosqlite.Connection, to_event: Callable[[Sequence[Any]], RecordedEvent]
) -> dict[str, TaskRow]:
    """The projection row of every task, folded from the whole log, in creation order."""
    return await fold_rows(scan(db), to_event)
