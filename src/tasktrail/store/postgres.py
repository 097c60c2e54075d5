"""The PostgreSQL event store (asyncpg): the SQLite store's contract, for many hosts.

Open it with ``async with PostgresEventStore("postgresql://user@host/db") as store:`` or,
as everything else in tasktrail does, through :func:`tasktrail.store.open_store`. The
tables live in the connection's current schema (the first one of ``search_path``; a URL
may set it: ``...?search_path=myschema``).

Connections: one writer, used only by the group-commit loop (:mod:`._pg_commit`); a small
pool for reads and for the operational tables (workers, checkpoints, deliveries); and one
connection that LISTENs for the commits of every process, a wake-up hint only.

Ordering: every append transaction takes a transaction-level advisory lock before it reads
the log's tail, so transactions commit in sequence order and a reader's snapshot always
holds a prefix of the log (see :mod:`._pg_commit`). Transient failures (serialization
failures, deadlocks, dropped or terminated connections) are retried inside the store for
up to ``retry_timeout`` seconds, then reported as :class:`~tasktrail.StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Self, TypeVar

import asyncpg

from tasktrail.errors import InvalidInputError, StorageError, StoreClosedError
from tasktrail.events import Upcaster
from tasktrail.store._backend import Backend
from tasktrail.store._controls import Control, write_control_pg
from tasktrail.store._pg_commit import INSERT_TASKS, TASK_WIDTH, PgGroupCommitter, columns
from tasktrail.store._pg_errors import is_transient, retrying
from tasktrail.store._pg_open import init_schema, lock_keys
from tasktrail.store._pg_scan import EVENT_COLUMNS, scan, verify_chain
from tasktrail.store._plan import TASK_COLUMNS, TaskRow, task_row
from tasktrail.store._scan import fold_events, fold_rows, fold_tasks
from tasktrail.store._validate import redact_url, server_address
from tasktrail.store.base import VerifyReport

__all__ = ["PostgresEventStore"]

_STALLED_WRITER_MS: Final = "60000"
T = TypeVar("T")


def _unreachable(err: BaseException) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror or err})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "no answer"
    return str(err) or type(err).__name__


class PostgresEventStore(Backend[PgGroupCommitter]):
    """The event log and task projection in a PostgreSQL database.

    Args:
        url: a ``postgresql://`` (or ``postgres://``) connection URL; the schema (its tables
            and triggers) is created in the connection's current schema if missing.
        max_event_bytes: the largest encoded payload accepted for one event.
        max_batch_events: the most events written by one group commit.
        retry_timeout: seconds to keep retrying transient failures (a dropped connection,
            a serialization failure, a server restart) before raising StorageError.
        connect_timeout: seconds ``open()`` tries to reach the server at all (a refused
            connection, a host that does not answer) before raising StorageError naming
            the host and port; once connected, failures are retried for ``retry_timeout``.
        pool_size: the most pooled connections for reads (plus one writer, one listener).
        clock: returns the time as unix seconds; injectable for tests.
        upcasters: extra upcasters, keyed by (event tag, schema version they read).
    """

    _NUMBERED = True
    _ORDER = "ord"
    _VERSION_TOP = 2**31 - 1
    _IDS_PER_QUERY = 2**31 - 1  # one array parameter, however many
    _EVENT_COLUMNS = EVENT_COLUMNS
    _STREAM_SIZES = (
        "SELECT version, octet_length(data) FROM events WHERE stream_id = $1 AND version > $2 "
        "AND version <= $3 ORDER BY version LIMIT $4",
        "SELECT count(*), max(k), sum(n) FROM (SELECT version AS k, octet_length(data) AS n "
        "FROM events WHERE stream_id = $1 AND version > $2 AND version <= $3 ORDER BY version "
        "LIMIT $4) AS w",
    )
    _STREAM_ROWS = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 "
        "AND version <= $3 ORDER BY version"
    )

    def __init__(
        self,
        url: str,
        *,
        max_event_bytes: int = 1 << 20,
        max_batch_events: int = 5000,
        retry_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        pool_size: int = 4,
        clock: Callable[[], float] = time.time,
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise InvalidInputError(f"expected a postgresql:// URL, not {url!r}")
        self.url = url
        self.where = redact_url(url)
        self.max_event_bytes = max_event_bytes
        self.max_batch_events = max_batch_events
        self.retry_timeout = retry_timeout
        if not (isinstance(connect_timeout, int | float) and 0 < connect_timeout < math.inf):
            raise InvalidInputError(
                f"connect_timeout must be a finite number of seconds > 0, not {connect_timeout!r}"
            )
        self.connect_timeout = float(connect_timeout)
        self.pool_size = pool_size
        self._init_backend(clock=clock, upcasters=upcasters)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_retry_at = 0.0
        self._write_lock = asyncio.Lock()
        self.schema = ""
        self._lock_key = 0
        self._channel = ""

    # -- opening and closing -------------------------------------------------------------

    async def _connect(self, **settings: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, timeout=10, server_settings=settings or None)

    async def _connect_writer(self) -> asyncpg.Connection:
        # A writer stalled inside its transaction (a partitioned host, a stopped process)
        # holds the log's lock: the server ends such a session after a minute, and the
        # transaction rolls back, so the other processes can go on.
        return await self._connect(idle_in_transaction_session_timeout=_STALLED_WRITER_MS)

    async def open(self) -> Self:
        """Connect, create or migrate the schema, start the commit loop."""
        if self._closing:
            raise StoreClosedError()
        if self._opened:
            return self

        reach_by = time.monotonic() + self.connect_timeout

        async def first_connection() -> asyncpg.Connection:
            conn = await self._reach(reach_by)
            try:
                schema = await conn.fetchval("SELECT current_schema()")
                if schema is None:
                    raise StorageError(
                        f"the search_path of {self.where} names no existing schema; create "
                        "the schema first (CREATE SCHEMA ...) or fix search_path"
                    )
                self.schema = str(schema)
                await init_schema(conn, schema=self.schema, where=self.where)
            except BaseException:
                conn.terminate()
                raise
            return conn

        writer = await retrying(first_connection, where=self.where, timeout=self.retry_timeout)
        self._lock_key = lock_keys(self.schema)[0]
        self._channel = f"tasktrail:{self.schema}"[:63]
        try:
            self._pool = await retrying(
                lambda: asyncpg.create_pool(
                    self.url, min_size=1, max_size=self.pool_size, timeout=10
                ),
                where=self.where,
                timeout=self.retry_timeout,
            )
        except BaseException:
            writer.terminate()
            raise
        handed = [writer]

        async def connect() -> asyncpg.Connection:
            return handed.pop() if handed else await self._connect_writer()

        self._committer = PgGroupCommitter(
            connect,
            where=self.where,
            lock=self._write_lock,
            lock_key=self._lock_key,
            channel=self._channel,
            clock=self._clock,
            max_batch_events=self.max_batch_events,
            max_event_bytes=self.max_event_bytes,
            retry_timeout=self.retry_timeout,
        )
        await self._committer.connection()
        self._opened = True
        await self._listen()
        return self

    async def _reach(self, deadline: float) -> asyncpg.Connection:
        """The writer's first connection. A server that cannot be reached at all (no such
        host, connection refused, no answer) is reported once ``deadline`` has passed,
        naming the host and port, instead of being retried for ``retry_timeout``."""
        try:
            left = max(deadline - time.monotonic(), 0.05)
            return await asyncio.wait_for(self._connect_writer(), left)
        except (OSError, TimeoutError) as err:
            if not isinstance(err, socket.gaierror) and time.monotonic() < deadline:
                raise  # retried: a server restarting refuses connections for a moment
            tried = (
                "" if isinstance(err, socket.gaierror) else f" (tried {self.connect_timeout:g} s)"
            )
            raise StorageError(
                f"cannot connect to PostgreSQL at {server_address(self.url)} ({self.where}): "
                f"{_unreachable(err)}{tried}; check that the server is running and that the "
                "host and port are right"
            ) from err

    async def _listen(self) -> None:
        """(Re)open the connection that hears other processes' commits; a failure is
        ignored (the hint is lost, polling still finds the events)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        now = time.monotonic()
        if now < self._listen_retry_at:
            return
        self._listen_retry_at = now + 1.0
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            listener = await asyncio.wait_for(self._connect(), 2.0)
            await listener.add_listener(self._channel, self._heard)
            self._listener = listener

    def _heard(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        committer = self._committer
        if committer is None:
            return
        try:
            ours = int(str(payload)) in committer.own_sequences
        except ValueError:
            ours = False
        if ours:
            committer.signal_commit()
        else:
            committer.signal_external()

    async def close(self) -> None:
        """Finish the queued appends, then close. Closing twice is harmless."""
        if self._closing:
            return
        self._closing = True
        try:
            if self._committer is not None:
                await self._committer.close()
        finally:
            listener, self._listener = self._listener, None
            if listener is not None and not listener.is_closed():
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await listener.close(timeout=2)
            pool, self._pool = self._pool, None
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), 5)
                except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    pool.terminate()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_opened", False) and not self._closing:  # __init__ may have failed
            _warn(f"PostgresEventStore({self.where!r}) was never closed", ResourceWarning)

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for_commit(self, timeout: float) -> None:
        """Return when any process commits events (a NOTIFY hint), or after ``timeout``."""
        committer = self._check_open()
        await self._listen()
        await committer.wait_for_commit(timeout)

    async def wait_for_change(self, timeout: float) -> bool:
        """Return True when another process committed events (its NOTIFY), False after
        ``timeout`` seconds."""
        committer = self._check_open()
        await self._listen()
        return await committer.wait_for_external(timeout)

    # -- reading ---------------------------------------------------------------------------

    async def _with_conn(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        self._check_open()
        pool = self._pool
        assert pool is not None

        async def once() -> T:
            self._check_open()  # a retry after close() began is not tried
            async with pool.acquire() as conn:
                try:
                    return await operation(conn)
                except BaseException as err:
                    if is_transient(err):
                        conn.terminate()  # the pool replaces it
                    raise

        try:
            return await retrying(once, where=self.where, timeout=self.retry_timeout)
        except StorageError as err:
            if self._closing and not isinstance(err, StoreClosedError):
                # the pool refused or dropped the query because the store is closing
                raise StoreClosedError() from err
            raise

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._with_conn(lambda conn: conn.fetch(sql, *params))

    async def _write_row(self, sql: str, params: Sequence[Any]) -> None:
        await self._with_conn(lambda conn: conn.execute(sql, *params))

    # -- pauses ------------------------------------------------------------------------------

    async def _write_control(
        self, action: str, kind: str, target: str, actor: str, reason: str | None
    ) -> Control | None:
        committer = self._check_open()
        async with self._write_lock:
            return await committer.run_locked(
                lambda conn: write_control_pg(
                    conn, action=action, kind=kind, target=target, actor=actor, reason=reason,
                    now=self._clock(),
                )
            )  # fmt: skip

    # -- checking and rebuilding -----------------------------------------------------------

    async def _snapshot(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``operation`` in one read-only snapshot of the database."""

        async def run(conn: asyncpg.Connection) -> T:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await operation(conn)

        return await self._with_conn(run)

    async def verify(self) -> VerifyReport:
        """Recompute the hash chain over the whole log (the same chain as SQLite's).

        Returns a :class:`VerifyReport`; raises TamperedLogError naming the first sequence
        number whose stored hash, position or content does not match.
        """

        return await self._snapshot(verify_chain)

    async def rebuild(self) -> int:
        """Drop the task projection and replay it from the log; returns the task count.

        The log is folded from one snapshot, beside the writers; only the swap holds the
        log's advisory lock: the events appended meanwhile are folded on top, and the
        table is emptied and refilled in one short transaction.
        """
        committer = self._check_open()
        tasks, last = await self._snapshot(lambda conn: fold_tasks(scan(conn), self._event))

        async def swap(conn: asyncpg.Connection) -> int:
            after = max(last.values(), default=0)
            folded, moved = dict(tasks), dict(last)
            rows = await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq", after
            )
            fold_events(folded, moved, [tuple(row) for row in rows], self._event)
            await conn.execute("DELETE FROM tasks")
            if folded:
                written = [task_row(task, moved[task_id]) for task_id, task in folded.items()]
                await conn.execute(INSERT_TASKS, *columns(written, TASK_WIDTH))
            return len(folded)

        async with self._write_lock:
            committer.forget()
            return await committer.run_locked(swap)

    async def _fold_and_live(self) -> tuple[dict[str, TaskRow], dict[str, Any]]:
        async def run(conn: asyncpg.Connection) -> tuple[dict[str, TaskRow], dict[str, Any]]:
            expected = await fold_rows(scan(conn), self._event)
            rows = await conn.fetch(f"SELECT {TASK_COLUMNS} FROM tasks")
            return expected, {row[0]: tuple(row) for row in rows}

        return await self._snapshot(run)
