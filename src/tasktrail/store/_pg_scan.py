"""Whole-log passes over a PostgreSQL event log: scanning, chain verification, live rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import asyncpg

from tasktrail.store._progress import advance
from tasktrail.store._scan import APPEND_ONLY_TRIGGERS, check_chain, check_first
from tasktrail.store._stream import SCAN_CHUNK_BYTES, bounded_chunks
from tasktrail.store.base import VerifyReport

__all__ = ["EVENT_COLUMNS", "scan", "verify_chain"]

EVENT_COLUMNS: Final = (
    "seq, event_id, stream_id, version, type, schema_version, recorded_at, actor, reason, "
    "correlation_id, convert_to(data, 'UTF8'), hash"
)
"""The columns of an event row, in the order the hash covers them, payload as bytes."""
_SIZES: Final = (  # (row by row, whole window): see tasktrail.store._stream
    "SELECT seq, octet_length(data) FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
    "SELECT count(*), max(k), sum(n) FROM (SELECT seq AS k, octet_length(data) AS n "
    "FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) AS w",
)
_ROWS: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq"


async def scan(
    conn: asyncpg.Connection, chunk: int = 20_000, *, chunk_bytes: int = SCAN_CHUNK_BYTES
) -> AsyncIterator[list[Any]]:
    """Every event row in sequence order (run it inside one snapshot), in chunks of at most
    ``chunk`` rows and about ``chunk_bytes`` of payload (:mod:`._stream`)."""

    async def probe(after: int, n: int, each: bool) -> list[Any]:
        return list(await conn.fetch(_SIZES[not each], after, n))

    async def fetch(after: int, last: int) -> list[Any]:
        return [tuple(row) for row in await conn.fetch(_ROWS, after, last)]

    async for rows in bounded_chunks(probe, fetch, after=0, budget=chunk_bytes, max_rows=chunk):
        advance(len(rows))
        yield rows


async def verify_chain(conn: asyncpg.Connection) -> VerifyReport:
    """Recompute the hash chain; raise TamperedLogError at the first bad or missing event."""
    low = await conn.fetchval("SELECT min(seq) FROM events")
    check_first(low)
    count, head, head_hash = await check_chain(scan(conn))
    triggers = {
        row[0]
        for row in await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass AND tgenabled <> 'D'"
        )
    }
    return VerifyReport(
        events=count,
        head_sequence=head,
        head_hash=head_hash,
        append_only=triggers >= APPEND_ONLY_TRIGGERS,
    )
