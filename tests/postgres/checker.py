"""The invariant checker over a raw PostgreSQL tasktrail schema (the twin of the SQLite one
in ``tests/reliability/checker.py``, with the same field names).

It reads the tables with asyncpg only (never through tasktrail), in one snapshot, and
judges them with the SQLite checker's :func:`judge` (its own copy of the legal transition
table and of the documented hash chain), so both backends are held to one set of rules.

Usage::

    report = await check(url, acknowledged=[("task-1", 3)], batches=[("id-a", "id-b")])
    assert report.ok, report.details
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import asyncpg

from reliability.checker import CheckReport, judge

__all__ = ["CheckReport", "check"]


async def check(
    url: str,
    *,
    acknowledged: Iterable[tuple[str, int]] = (),
    batches: Iterable[Sequence[str]] = (),
) -> CheckReport:
    """Check every invariant of the tasktrail tables at ``url`` (its search_path schema).

    ``acknowledged``: (task id, version) pairs whose append returned to a caller; each
    must be in the log. ``batches``: the event ids of appends that may or may not have
    committed; each must be in the log wholly or not at all. Integrity failures, here:
    append-only triggers missing or disabled.
    """
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(
                "SELECT seq, event_id, stream_id, version, type, schema_version, recorded_at, "
                "actor, reason, correlation_id, convert_to(data, 'UTF8'), hash "
                "FROM events ORDER BY seq"
            )
            live = {
                row[0]: (row[1], row[2], row[3], row[4], json.loads(row[5]))
                for row in await conn.fetch(
                    "SELECT id, state, agent, version, last_seq, record FROM tasks"
                )
            }
            triggers = {
                row[0]
                for row in await conn.fetch(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass "
                    "AND tgenabled <> 'D'"
                )
            }
    finally:
        await conn.close()
    integrity = [
        f"trigger {name} is missing or disabled"
        for name in ("events_append_only_update", "events_append_only_delete")
        if name not in triggers
    ]
    return judge(
        [tuple(row) for row in rows], live, integrity, acknowledged=acknowledged, batches=batches
    )
