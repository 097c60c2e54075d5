"""The PostgreSQL schema: append-only in the database itself, safe concurrent first start,
and a checker that does see tampering."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from helpers import new
from tasktrail import PostgresEventStore, TamperedLogError, Trigger
from tasktrail.store._pg_open import migrations

from .checker import check


async def filled(pg_url: str) -> None:
    """Three events in the log of ``pg_url``."""
    async with PostgresEventStore(pg_url) as store:
        await store.append("t1", [new(Trigger.CREATE), new(Trigger.CLAIM), new(Trigger.START)])


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE events SET actor = 'mallory'", id="update"),
        pytest.param("DELETE FROM events", id="delete"),
        pytest.param("TRUNCATE events", id="truncate"),
    ],
)
async def test_triggers_refuse_to_rewrite_the_log(
    pg_url: str, raw: asyncpg.Connection, statement: str
) -> None:
    """UPDATE, DELETE and TRUNCATE on the events table are refused by triggers."""
    await filled(pg_url)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await raw.execute(statement)
    assert await raw.fetchval("SELECT count(*) FROM events") == 3


async def test_concurrent_first_start_migrates_once(pg_url: str, raw: asyncpg.Connection) -> None:
    """Eight stores opening a new schema at once apply each migration exactly once."""
    stores = [PostgresEventStore(pg_url) for _ in range(8)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        results = await asyncio.gather(
            *(store.append(f"t{i}", [new(Trigger.CREATE)]) for i, store in enumerate(stores))
        )
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    assert sorted(r.sequence for r in results) == list(range(1, 9))
    versions = await raw.fetch("SELECT version FROM tasktrail_schema ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, len(migrations()) + 1))


async def test_tampering_is_seen_by_verify_and_by_the_checker(
    pg_url: str, raw: asyncpg.Connection
) -> None:
    """A row rewritten behind disabled triggers fails verify() and the raw checker."""
    await filled(pg_url)
    assert (await check(pg_url)).ok
    await raw.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await raw.execute("UPDATE events SET actor = 'mallory' WHERE seq = 2")
    report = await check(pg_url)
    assert (report.chain_breaks, report.integrity_failures) == (1, 2)
    async with PostgresEventStore(pg_url) as store:
        with pytest.raises(TamperedLogError) as info:
            await store.verify()
        assert info.value.sequence == 2


async def test_an_event_renumbered_below_one_is_named(pg_url: str, raw: asyncpg.Connection) -> None:
    """An event moved to sequence 0 (outside the scan) fails verify(), which names it."""
    await filled(pg_url)
    await raw.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await raw.execute("UPDATE events SET seq = 0 WHERE seq = 1")
    async with PostgresEventStore(pg_url) as store:
        with pytest.raises(TamperedLogError) as info:
            await store.verify()
        assert info.value.sequence == 0


async def test_verify_reports_disabled_triggers(pg_url: str, raw: asyncpg.Connection) -> None:
    """verify() says append_only=False once the triggers are disabled, True before."""
    await filled(pg_url)
    async with PostgresEventStore(pg_url) as store:
        assert (await store.verify()).append_only
        await raw.execute("ALTER TABLE events DISABLE TRIGGER events_append_only_delete")
        report = await store.verify()
        assert (report.events, report.append_only) == (3, False)
