"""Whole-log passes over an SQLite event log: chain verification and folding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import aiosqlite

from tasktrail.errors import TamperedLogError
from tasktrail.events import RecordedEvent
from tasktrail.store._plan import TaskRow
from tasktrail.store._scan import check_chain, fold_rows
from tasktrail.store._sqlite_errors import DriverError
from tasktrail.store.base import VerifyReport

__all__ = ["EVENT_COLUMNS", "fetch_all", "fold_log", "scan", "verify_chain"]

EVENT_COLUMNS: Final = (
    "seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, reason, "
    "correlation_id, CAST(data AS BLOB), hash"
)
"""The columns of an event row, in the order the hash covers them, payload as bytes."""
_APPEND_ONLY_TRIGGERS: Final = frozenset({"events_append_only_update", "events_append_only_delete"})


async def fetch_all(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Every row of a query, read in one step on the connection's thread (no other query
    can run between its first and last row). When a row fails to decode, the driver's
    traceback is dropped: it holds the half-read cursor, whose open statement would keep
    the connection on its old snapshot for as long as the error lives."""
    try:
        return list(await db.execute_fetchall(sql, params))
    except DriverError as err:
        raise err.with_traceback(None) from None


async def scan(db: aiosqlite.Connection, chunk: int = 20_000) -> AsyncIterator[list[Any]]:
    """Every event row in sequence order, in chunks."""
    after = 0
    while True:
        rows = await fetch_all(
            db,
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, chunk),
        )
        if not rows:
            return
        yield rows
        after = rows[-1][0]


async def verify_chain(db: aiosqlite.Connection) -> VerifyReport:
    """Recompute the hash chain; raise TamperedLogError at the first bad or missing event."""
    ((low,),) = await fetch_all(db, "SELECT min(seq) FROM events")
    if low is not None and low < 1:  # the scan starts after 0: such a row would be unseen
        raise TamperedLogError(low, "sequence numbers start at 1; this event was moved")
    count, head, head_hash = await check_chain(scan(db))
    triggers = {
        row[0]
        for row in await fetch_all(
            db, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
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
