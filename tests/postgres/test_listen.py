"""LISTEN/NOTIFY: a commit by another store (process, host) wakes waiters early; it is only
a hint, and polling still finds events when the hint is lost."""

from __future__ import annotations

import asyncio

import asyncpg

from helpers import new
from tasktrail import PostgresEventStore, Trigger


async def test_commit_of_another_store_wakes_a_waiter(pg_url: str) -> None:
    """wait_for_commit(an hour) returns after a commit by a different store."""
    async with PostgresEventStore(pg_url) as waiter, PostgresEventStore(pg_url) as writer:
        waiting = asyncio.create_task(waiter.wait_for_commit(3600.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await writer.append("t1", [new(Trigger.CREATE)])
        await asyncio.wait_for(waiting, 60.0)  # a hang guard, far below the hour it would wait
        assert [e.stream_id for e in await waiter.read_all()] == ["t1"]


async def test_subscription_polls_when_the_listener_is_gone(
    pg_url: str, raw: asyncpg.Connection
) -> None:
    """With its LISTEN connection terminated, a subscriber still receives new events."""
    async with PostgresEventStore(pg_url) as reader, PostgresEventStore(pg_url) as writer:
        sub = reader.subscribe("follower", poll_interval=0.05)
        cut = await raw.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert cut == 2  # both stores' listeners
        await writer.append("t1", [new(Trigger.CREATE)])
        event = await asyncio.wait_for(anext(sub), 60.0)  # a hang guard
        assert event.stream_id == "t1"
