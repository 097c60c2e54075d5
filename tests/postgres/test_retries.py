"""Transient failures are retried inside the store and never reach the caller: serialization
failures, deadlocks, connections terminated by the server, a connection lost at COMMIT.

Every failure here is real and comes from the server: triggers raise the SQLSTATE, or
``pg_terminate_backend`` ends the store's connections. A non-transactional sequence counts
the injected failures, so the tests see that they happened.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from helpers import new
from tasktrail import PostgresEventStore, StorageError, Trigger, open_store

from .checker import check

FAIL_FIRST_INSERTS = """
CREATE SEQUENCE injected;
CREATE FUNCTION fail_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('injected') <= 2 THEN
        RAISE EXCEPTION 'injected failure' USING ERRCODE = '{sqlstate}';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fail_first AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION fail_first();
"""

DIE_AT_FIRST_COMMIT = """
CREATE SEQUENCE injected;
CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('injected') = 1 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit();
"""

TERMINATE_OTHERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def lifecycle() -> list:
    """The four events of a successful task."""
    return [new(t) for t in (Trigger.CREATE, Trigger.CLAIM, Trigger.START, Trigger.COMPLETE)]


@pytest.mark.parametrize(
    "sqlstate",
    [pytest.param("40001", id="serialization-failure"), pytest.param("40P01", id="deadlock")],
)
async def test_serialization_failures_and_deadlocks_are_retried(
    pg_url: str, raw: asyncpg.Connection, sqlstate: str
) -> None:
    """Two injected 40001/40P01 failures in a row: the append still succeeds, written once."""
    async with PostgresEventStore(pg_url) as store:
        await raw.execute(FAIL_FIRST_INSERTS.format(sqlstate=sqlstate))
        result = await store.append("t1", lifecycle(), expected_version=0)
        assert (result.version, result.sequence, result.duplicate) == (4, 4, False)
    assert await raw.fetchval("SELECT last_value FROM injected") == 3  # two failed, one passed
    assert (await check(pg_url, acknowledged=[("t1", 4)])).ok


async def test_connection_lost_at_commit_is_retried(pg_url: str, raw: asyncpg.Connection) -> None:
    """The server ends the writer's connection during COMMIT: the append is retried, once."""
    async with PostgresEventStore(pg_url) as store:
        await raw.execute(DIE_AT_FIRST_COMMIT)
        result = await store.append("t1", lifecycle(), expected_version=0)
        assert result.version == 4
        assert [e.version for e in await store.read_stream("t1")] == [1, 2, 3, 4]
    assert await raw.fetchval("SELECT last_value FROM injected") > 1  # it did die once
    assert (await check(pg_url, acknowledged=[("t1", 4)])).ok


async def test_terminated_connections_never_reach_the_caller(
    pg_url: str, raw: asyncpg.Connection
) -> None:
    """pg_terminate_backend on every connection of the store, again and again, under load.

    The adversary is bounded by progress, not by a clock: it strikes again only once a new
    batch has committed since its last strike, so a slow machine is never livelocked (a
    timer could end every connection before any transaction finishes), and every batch
    that commits is followed by a strike.
    """
    terminated = strikes = 0
    async with open_store(pg_url) as store:

        async def one(i: int) -> int:
            task_id = f"t{i}"
            for version, event in enumerate(lifecycle()):
                await store.append(task_id, [event], expected_version=version)
                await store.get_task(task_id)
            return i

        work = asyncio.gather(*(one(i) for i in range(100)))
        struck_at = -1
        while not work.done():
            head = await raw.fetchval("SELECT coalesce(max(seq), 0) FROM events")
            if head > struck_at:  # progress since the last strike
                terminated += await raw.fetchval(TERMINATE_OTHERS)
                strikes, struck_at = strikes + 1, head
            await asyncio.wait([work], timeout=0.01)  # a poll, not a pace: the next check
        assert len(await work) == 100
        assert await store.head() == 400
        assert await store.check_projection() == []
    assert terminated > 0 and strikes > 1
    report = await check(pg_url, acknowledged=[(f"t{i}", 4) for i in range(100)])
    assert report.ok, report.details
    assert report.events == 400


async def test_unreachable_server_is_a_storage_error() -> None:
    """A server that cannot be reached ends, after connect_timeout, in a clear StorageError."""
    store = PostgresEventStore("postgresql://nobody@127.0.0.1:9/nowhere", connect_timeout=0.2)
    with pytest.raises(StorageError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:9"):
        await store.open()


async def test_missing_database_is_a_storage_error(postgres_server) -> None:
    """A database that does not exist is reported as a StorageError naming it."""
    url = postgres_server.url.replace(postgres_server.database, "no_such_database")
    with pytest.raises(StorageError, match="no_such_database"):
        await PostgresEventStore(url, retry_timeout=0.2).open()
