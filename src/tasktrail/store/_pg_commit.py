"""Group commit for the PostgreSQL store.

Every append transaction first takes ``pg_advisory_xact_lock`` on the log. The lock is held
until the commit is visible, so transactions that write the log commit one after another,
in the order of their sequence numbers: a sequence number is the log's tail plus one (no
PostgreSQL sequence, so no holes either), and a reader's snapshot always holds a prefix of
the log. A reader tailing by sequence number therefore never skips a committed event.
Group commit amortises the lock: one transaction writes every append queued meanwhile.

Failures: a serialization failure, a deadlock or a dropped connection is retried on a
fresh connection. A connection lost during COMMIT leaves the outcome unknown, so the retry
plans the batch "carefully": every event id is looked up first, and an append already
written is answered as stored (idempotency by event id), never written twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from tasktrail.errors import StorageError
from tasktrail.projection import Task
from tasktrail.store._chain import GENESIS
from tasktrail.store._commit import GroupCommitter, Outcome, Queued
from tasktrail.store._controls import READ_PAUSED, paused_sets
from tasktrail.store._ops import (
    Op,
    ReadActive,
    ReadClaimed,
    ReadKnownIds,
    ReadNextAt,
    ReadPaused,
    ReadQueue,
    ReadTail,
    ReadTasks,
    Write,
)
from tasktrail.store._pg_errors import is_transient, retrying
from tasktrail.store._pg_open import LOCK_CLASS
from tasktrail.store._plan import TASK_COLUMNS, TASK_UPSERT, decode_task
from tasktrail.store._query import ACTIVE_COUNTS, Params, next_at_sql, queue_sql

__all__ = [
    "INSERT_TASKS",
    "TASK_WIDTH",
    "PgGroupCommitter",
    "columns",
]

T = TypeVar("T")

_EVENT_TYPES: Final = (
    "bigint", "text", "text", "int", "text", "int", "float8", "text", "text", "text", "text",
    "text",
)  # fmt: skip
_TASK_TYPES: Final = (
    "text", "text", "text", "text", "text", "int", "int", "bigint", "float8", "float8", "text",
    "float8", "text", "float8",
)  # fmt: skip
TASK_WIDTH: Final = len(_TASK_TYPES)
"""Columns of a projection row (:data:`~._plan.TaskRow`)."""


def _unnest(types: Sequence[str], first: int) -> str:
    """``unnest($first::type, ...)``: one array parameter per column."""
    return "unnest(" + ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types)) + ")"


def _insert_tasks(first: int) -> str:
    """Insert projection rows in the given order (their ``ord`` is the creation order)."""
    return (
        f"INSERT INTO tasks ({TASK_COLUMNS}) SELECT {TASK_COLUMNS} FROM "
        f"{_unnest(_TASK_TYPES, first)} WITH ORDINALITY AS u({TASK_COLUMNS}, n) ORDER BY n"
    )


INSERT_TASKS: Final = _insert_tasks(1)
"""Insert projection rows ($1..$14: one array per column) in the given order."""
WRITE_BATCH: Final = (
    f"WITH e AS (INSERT INTO events SELECT * FROM {_unnest(_EVENT_TYPES, 1)}), "
    f"t AS ({_insert_tasks(13)} {TASK_UPSERT}) "
    "SELECT pg_notify($27, $28)"
)
"""One statement, one round trip: the events ($1..$12), the projection rows ($13..$26),
and the wake-up NOTIFY ($27 channel, $28 last sequence)."""


def columns(rows: Iterable[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists, the parameters of an ``unnest`` insert."""
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


class PgGroupCommitter(GroupCommitter):
    """Owns the PostgreSQL store's appends, on its own writer connection."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        where: str,
        lock: asyncio.Lock,
        lock_key: int,
        channel: str,
        clock: Callable[[], float],
        max_batch_events: int,
        max_event_bytes: int,
        retry_timeout: float,
    ) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._where = where
        self._lock_key = lock_key
        self._channel = channel
        self._retry_timeout = retry_timeout
        self.retries = 0
        """How many times a transaction was tried again (a statistic for tests)."""
        super().__init__(
            name=where,
            lock=lock,
            clock=clock,
            max_batch_events=max_batch_events,
            max_event_bytes=max_event_bytes,
        )

    async def connection(self) -> asyncpg.Connection:
        """The writer connection, opened again if it was lost."""
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await self._connect()
        return self._conn

    async def discard(self) -> None:
        """Drop the writer connection (after a failure left it in doubt)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Commit what is queued, stop the loop, close the writer connection."""
        try:
            await super().close()
        finally:
            conn, self._conn = self._conn, None
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close(timeout=2)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    conn.terminate()

    async def run_locked(
        self,
        operation: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Run ``operation`` in a transaction holding the log's advisory lock; a transient
        failure rolls it back and runs it again on a fresh connection (the caller holds
        the store's write lock)."""

        async def once() -> T:
            conn = await self.connection()
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, self._lock_key
                    )
                    return await operation(conn)
            except BaseException as err:
                if is_transient(err) or conn.is_closed():
                    await self.discard()
                raise

        return await retrying(
            once,
            where=self._where,
            timeout=self._retry_timeout,
            on_retry=on_retry or self._count_retry,
        )

    def _count_retry(self, _err: BaseException) -> None:
        self.retries += 1

    async def _write_batch(
        self, batch: list[Queued]
    ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
        careful = False

        async def write(
            conn: asyncpg.Connection,
        ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
            return await self._write(conn, batch, careful=careful)

        def doubt(err: BaseException) -> None:
            nonlocal careful
            careful = True  # the lost transaction may have committed: look ids up
            self._count_retry(err)

        try:
            return await self.run_locked(write, on_retry=doubt)
        except StorageError as err:
            if not isinstance(err.__cause__, asyncpg.UniqueViolationError):
                raise
            # The fast path met an event id already stored (a retried append): plan
            # again, looking every id up, so it is answered as stored.
            careful = True
            return await self.run_locked(write, on_retry=doubt)

    async def _write(
        self, conn: asyncpg.Connection, batch: list[Queued], *, careful: bool
    ) -> tuple[list[Outcome], dict[str, Task | None], int | None]:
        steps = self._steps(batch, careful=careful)
        result: Any = None
        while True:
            try:
                op = steps.send(result)
            except StopIteration as stop:
                done: tuple[list[Outcome], dict[str, Task | None], int | None] = stop.value
                return done
            result = await self._execute(conn, op)

    async def _execute(self, conn: asyncpg.Connection, op: Op) -> Any:
        """Run one op of a batch's steps inside the locked transaction."""
        match op:
            case ReadTail():
                row = await conn.fetchrow("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                return (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)
            case ReadTasks(ids=ids):
                rows = await conn.fetch(
                    "SELECT id, record FROM tasks WHERE id = ANY($1::text[])", ids
                )
                return {row[0]: decode_task(row[1]) for row in rows}
            case ReadActive():
                return {str(k): int(n) for k, n in await conn.fetch(ACTIVE_COUNTS)}
            case ReadKnownIds(ids=ids):
                rows = await conn.fetch(
                    "SELECT event_id, stream_id, version, seq FROM events "
                    "WHERE event_id = ANY($1::text[])",
                    ids,
                )
                return {r[0]: (r[1], int(r[2]), int(r[3])) for r in rows}
            case ReadQueue(page=page):
                p = Params(numbered=True)
                sql = queue_sql(page, p, order="ord")
                return [
                    ((int(r[0]), float(r[1]), int(r[2])), decode_task(r[3]))
                    for r in await conn.fetch(sql, *p.values)
                ]
            case ReadNextAt(now=now, agents=agents, task_ids=task_ids):
                p = Params(numbered=True)
                value = await conn.fetchval(
                    next_at_sql(p, now=now, agents=agents, task_ids=task_ids), *p.values
                )
                return None if value is None else float(value)
            case ReadPaused():
                return paused_sets(await conn.fetch(READ_PAUSED))
            case ReadClaimed(low=low, high=high):
                rows = await conn.fetch(
                    "SELECT DISTINCT stream_id FROM events WHERE event_id >= $1 AND event_id < $2",
                    low,
                    high,
                )
                return [row[0] for row in rows]
            case Write(events=events, tasks=task_rows, last_sequence=last):
                await conn.execute(
                    WRITE_BATCH,
                    *columns(events, 12),
                    *columns(task_rows, TASK_WIDTH),
                    self._channel,
                    str(last),
                )
                return None
        raise AssertionError(f"unknown op {op!r}")  # pragma: no cover
