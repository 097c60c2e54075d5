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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Self, TypeVar

import asyncpg

from tasktrail.errors import InvalidInputError, StorageError, StoreClosedError, TaskNotFoundError
from tasktrail.events import BUILTIN_UPCASTERS, NewEvent, RecordedEvent, Upcaster, decode_payload
from tasktrail.ids import check_task_id
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.store._claim import ClaimRequest, ClaimResult
from tasktrail.store._commit import CommitStatistics, LatencyHistogram
from tasktrail.store._controls import (
    CONTROL_COLUMNS,
    LIST_PAUSES,
    Control,
    check_control,
    control,
    write_control_pg,
)
from tasktrail.store._pg_commit import (
    ACTIVE_COUNTS,
    INSERT_TASKS,
    TASK_WIDTH,
    PgGroupCommitter,
    columns,
)
from tasktrail.store._pg_errors import is_transient, retrying
from tasktrail.store._pg_open import init_schema, lock_keys
from tasktrail.store._pg_ops import OperationalTables
from tasktrail.store._pg_scan import EVENT_COLUMNS, live_rows, scan, verify_chain
from tasktrail.store._plan import AppendResult, TaskRow, task_row
from tasktrail.store._query import (
    TASK_COUNTS,
    Params,
    TaskFilter,
    count_rows,
    count_sql,
    cursor_sql,
    finished_sql,
    list_sql,
    resolve_cursor,
)
from tasktrail.store._scan import fold_rows, fold_tasks
from tasktrail.store._shared import (
    check_state_at,
    check_versions,
    decode_task,
    prepare_append,
    replay_chunks,
)
from tasktrail.store._stream import (
    DEFAULT_CHUNK_BYTES,
    STREAM_MAX_ROWS,
    bounded_chunks,
    check_chunk_bytes,
)
from tasktrail.store._validate import redact_url, server_address
from tasktrail.store.base import VerifyReport
from tasktrail.store.subscription import Subscription

__all__ = ["PostgresEventStore"]

_STALLED_WRITER_MS: Final = "60000"
_STREAM_SIZES: Final = (  # (row by row, whole window): see tasktrail.store._stream
    "SELECT version, octet_length(data) FROM events WHERE stream_id = $1 AND version > $2 "
    "AND version <= $3 ORDER BY version LIMIT $4",
    "SELECT count(*), max(k), sum(n) FROM (SELECT version AS k, octet_length(data) AS n "
    "FROM events WHERE stream_id = $1 AND version > $2 AND version <= $3 ORDER BY version "
    "LIMIT $4) AS w",
)
_STREAM_ROWS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 "
    "AND version <= $3 ORDER BY version"
)

T = TypeVar("T")


def _unreachable(err: BaseException) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror or err})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "no answer"
    return str(err) or type(err).__name__


class PostgresEventStore(OperationalTables):
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
        self._clock = clock
        self._upcasters = {**BUILTIN_UPCASTERS, **(upcasters or {})}
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_retry_at = 0.0
        self._write_lock = asyncio.Lock()
        self._committer: PgGroupCommitter | None = None
        self._closing = False
        self._opened = False
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

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_opened", False) and not self._closing:  # __init__ may have failed
            _warn(f"PostgresEventStore({self.where!r}) was never closed", ResourceWarning)

    def _now(self) -> float:
        return self._clock()

    def _check_open(self) -> PgGroupCommitter:
        if not self._opened or self._closing or self._committer is None:
            raise StoreClosedError()
        return self._committer

    # -- appending -----------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        limit: int | None = None,
        fence: tuple[str, int] | None = None,
    ) -> AppendResult:
        """Append ``events`` to the task ``stream_id``, atomically; return after commit.

        The contract of :meth:`SQLiteEventStore.append <tasktrail.SQLiteEventStore.append>`:
        checked against ``expected_version`` and the lifecycle, idempotent by event id,
        with ``limit`` refused with ConcurrencyLimitError when the task's limit key already
        has ``limit`` tasks starting or running (checked under the log's advisory lock, so
        across every process and host), and with ``fence`` refused with
        AttemptSupersededError unless that attempt still holds the task.
        """
        committer = self._check_open()
        request = prepare_append(
            stream_id,
            events,
            expected_version,
            max_event_bytes=self.max_event_bytes,
            allow_nul=False,
        )
        request.limit = limit
        request.fence = fence
        result: AppendResult = await committer.submit(request)
        return result

    async def claim(self, request: ClaimRequest) -> ClaimResult:
        """Claim startable tasks for a worker in the next group commit, under the log's
        advisory lock, so no two workers of any host ever claim one task."""
        result: ClaimResult = await self._check_open().submit(request)
        return result

    def commit_statistics(self) -> CommitStatistics:
        """How long this store object's commits took so far (a histogram of seconds)."""
        committer = self._committer
        if committer is None:
            return LatencyHistogram().snapshot()
        return committer.latency.snapshot()

    async def drain(self) -> None:
        """Return once every append already queued is committed (or failed)."""
        await self._check_open().drain()

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

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._with_conn(lambda conn: conn.fetch(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> None:
        await self._with_conn(lambda conn: conn.execute(sql, *args))

    def _event(self, row: Sequence[Any]) -> RecordedEvent:
        payload = decode_payload(
            row[4], row[5], row[10], sequence=row[0], upcasters=self._upcasters
        )
        return RecordedEvent(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
            payload, row[11],
        )  # fmt: skip

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one task with ``after_version < version <= to_version``."""
        check_task_id(stream_id)
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 "
            "AND version <= $3 ORDER BY version",
            stream_id,
            after_version,
            min(to_version if to_version is not None else 2**31 - 1, 2**31 - 1),
        )
        return [self._event(row) for row in rows]

    def iter_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        to_version: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """The events of one task with ``after_version < version <= to_version``, in order,
        in non-empty chunks of about ``chunk_bytes`` of payload (a bigger event comes
        alone). Each chunk is read by short queries: no connection is held between chunks.
        """
        check_task_id(stream_id)
        after, last = check_versions(after_version, to_version, top=2**31 - 1)
        return self._iter_stream(stream_id, after, last, check_chunk_bytes(chunk_bytes))

    async def _iter_stream(
        self, stream_id: str, after: int, last: int, budget: int
    ) -> AsyncIterator[list[RecordedEvent]]:
        async def probe(after: int, n: int, each: bool) -> list[Any]:
            return await self._fetch(_STREAM_SIZES[not each], stream_id, after, last, n)

        async def fetch(after: int, upto: int) -> list[RecordedEvent]:
            rows = await self._fetch(_STREAM_ROWS, stream_id, after, upto)
            return [self._event(row) for row in rows]

        async for events in bounded_chunks(
            probe, fetch, after=after, budget=budget, max_rows=STREAM_MAX_ROWS
        ):
            yield events

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of the whole log with a sequence number above ``after``.

        Never skips a committed event: events commit in sequence order.
        """
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit,
        )
        return [self._event(row) for row in rows]

    async def head(self) -> int:
        """The sequence number of the last committed event (0 for an empty log)."""
        rows = await self._fetch("SELECT coalesce(max(seq), 0) FROM events")
        return int(rows[0][0])

    async def get_task(self, task_id: str) -> Task | None:
        """The current state of a task, or ``None`` if there is no such task."""
        check_task_id(task_id)
        rows = await self._fetch("SELECT record FROM tasks WHERE id = $1", task_id)
        return decode_task(rows[0][0]) if rows else None

    async def list_tasks(
        self,
        *,
        state: TaskState | str | Iterable[TaskState | str] | None = None,
        agent: str | Iterable[str] | None = None,
        parent_id: str | None = None,
        rerun_of: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        worker_id: str | None = None,
        id_prefix: str | None = None,
        finished_since: datetime | float | None = None,
        only_finished_since: datetime | float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        sort: str = "created",
        after_id: str | None = None,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every filter given, oldest first: the filters and the paging of
        :meth:`SQLiteEventStore.list_tasks <tasktrail.SQLiteEventStore.list_tasks>`."""
        filters: TaskFilter = {
            "state": state, "agent": agent, "parent_id": parent_id, "rerun_of": rerun_of,
            "since": since, "until": until, "worker_id": worker_id, "id_prefix": id_prefix,
            "finished_since": finished_since, "only_finished_since": only_finished_since,
        }  # fmt: skip
        after = None
        if after_id is not None:
            p = Params(numbered=True)
            sql = cursor_sql(p, task_id=check_task_id(after_id), sort=sort, order="ord")
            rows = await self._fetch(sql, *p.values)
            after = resolve_cursor(after_id, rows[0] if rows else None)
        p = Params(numbered=True)
        sql = list_sql(
            p, filters, order="ord", sort=sort, newest_first=newest_first, after=after,
            offset=offset, limit=limit,
        )  # fmt: skip
        return [decode_task(row[0]) for row in await self._fetch(sql, *p.values)]

    async def count_tasks(
        self,
        *,
        limit: int | None = None,
        sort: str = "created",
        newest_first: bool = False,
        after_id: str | None = None,
        **filters: Any,
    ) -> int:
        """How many tasks match the filters of :meth:`list_tasks` (after ``after_id`` in
        its order, if given), counting at most ``limit``: a bounded count reads at most
        that many index entries."""
        after = None
        if after_id is not None:
            p = Params(numbered=True)
            sql = cursor_sql(p, task_id=check_task_id(after_id), sort=sort, order="ord")
            rows = list(await self._fetch(sql, *p.values))
            after = resolve_cursor(after_id, rows[0] if rows else None)
        p = Params(numbered=True)
        sql = count_sql(
            p, filters, order="ord", limit=limit, sort=sort, newest_first=newest_first,
            after=after,
        )  # fmt: skip
        rows = list(await self._fetch(sql, *p.values))
        return int(rows[0][0])

    async def task_counts(self) -> dict[str, dict[str, int]]:
        """How many tasks each agent has in each state (states without tasks left out)."""
        return count_rows(await self._fetch(TASK_COUNTS))

    async def get_tasks(self, task_ids: Iterable[str]) -> list[Task]:
        """The current state of each task that exists among ``task_ids``."""
        ids = [check_task_id(task_id) for task_id in task_ids]
        if not ids:
            return []
        rows = await self._fetch("SELECT record FROM tasks WHERE id = ANY($1::text[])", ids)
        return [decode_task(row[0]) for row in rows]

    async def queued_tasks(
        self,
        *,
        limit: int,
        agents: Iterable[str] | None = None,
        created_before: float | None = None,
    ) -> list[Task]:
        """Pending tasks in start order: highest priority first, then first in, first out.

        Only tasks of ``agents`` if given, and created at or before ``created_before`` if given.
        """
        p = Params(numbered=True)
        sql = "SELECT record FROM tasks WHERE state = 'pending'"
        if agents is not None:
            sql += " AND " + p.one_of("agent", agents)
        if created_before is not None:
            sql += f" AND created_at <= {p.add(float(created_before))}"
        sql += f" ORDER BY priority DESC, created_at, ord LIMIT {p.add(limit)}"
        return [decode_task(row[0]) for row in await self._fetch(sql, *p.values)]

    async def expired_tasks(
        self, *, now: float, limit: int, agents: Iterable[str] | None = None
    ) -> list[Task]:
        """Pending tasks (of ``agents``, if given) past their TTL or queue timeout at ``now``."""
        p = Params(numbered=True)
        sql = f"SELECT record FROM tasks WHERE state = 'pending' AND expires_at <= {p.add(now)}"
        if agents is not None:
            sql += " AND " + p.one_of("agent", agents)
        sql += f" ORDER BY expires_at LIMIT {p.add(limit)}"
        return [decode_task(row[0]) for row in await self._fetch(sql, *p.values)]

    async def finished_after(
        self, after: int, *, limit: int = 10_000, with_parent: bool = False
    ) -> tuple[list[tuple[str, Task]], int]:
        """The tasks that finished after sequence number ``after``: ``([(event id of the
        final event, task)], position)`` over the next ``limit`` sequence numbers at most,
        where ``position`` is the last one looked at (the next call's ``after``). With
        ``with_parent``, only tasks that have a parent. The tasks are read with their final
        events, in one query, without decoding the log."""
        head = await self.head()
        upto = min(head, after + limit)
        if upto <= after:
            return [], after
        p = Params(numbered=True)
        rows = await self._fetch(
            finished_sql(p, after=after, upto=upto, with_parent=with_parent), *p.values
        )
        return [(row[1], decode_task(row[2])) for row in rows], upto

    async def active_counts(self) -> dict[str, int]:
        """Tasks in ``starting``/``running`` per limit key (concurrency key, else agent)."""
        return {str(key): int(count) for key, count in await self._fetch(ACTIVE_COUNTS)}

    async def history(self, task_id: str) -> list[RecordedEvent]:
        """Every event of a task, in order. Raises TaskNotFoundError for an unknown id."""
        events = await self.read_stream(task_id)
        if not events:
            raise TaskNotFoundError(task_id)
        return events

    async def state_at(
        self, task_id: str, *, version: int | None = None, at: datetime | float | None = None
    ) -> Task | None:
        """The task as it was at ``version``, or at time ``at`` (the latest if neither);
        ``None`` when it did not exist yet at ``at``."""
        check_state_at(version, at)
        return await replay_chunks(
            task_id, self.iter_stream(task_id, to_version=version), version=version, at=at
        )

    # -- checking and rebuilding -----------------------------------------------------------

    async def pause(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control:
        """Pause an agent or a concurrency key (see :meth:`SQLiteEventStore.pause
        <tasktrail.SQLiteEventStore.pause>`); written under the log's advisory lock, which
        every claim holds: no claim that begins after this returns takes its tasks."""
        result = await self._control("pause", kind, target, actor, reason)
        assert result is not None
        return result

    async def resume(
        self, kind: str, target: str, *, actor: str, reason: str | None = None
    ) -> Control | None:
        """Resume what :meth:`pause` paused (``None``: it was not paused)."""
        return await self._control("resume", kind, target, actor, reason)

    async def _control(
        self, action: str, kind: str, target: str, actor: str, reason: str | None
    ) -> Control | None:
        kind, target, actor = check_control(kind, target, actor)
        committer = self._check_open()
        async with self._write_lock:
            return await committer.run_locked(
                lambda conn: write_control_pg(
                    conn, action=action, kind=kind, target=target, actor=actor, reason=reason,
                    now=self._now(),
                )
            )  # fmt: skip

    async def list_pauses(self) -> list[Control]:
        """The pauses in force (the control that made each), oldest first."""
        return [control(row) for row in await self._fetch(LIST_PAUSES)]

    async def controls(self, *, after: int = 0, limit: int = 1000) -> list[Control]:
        """Up to ``limit`` rows of the control log (every pause and resume) after ``after``."""
        rows = await self._fetch(
            f"SELECT {CONTROL_COLUMNS} FROM controls WHERE seq > $1 ORDER BY seq LIMIT $2",
            after,
            limit,
        )
        return [control(row) for row in rows]

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
            for row in await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq", after
            ):
                event = self._event(tuple(row))
                folded[event.stream_id] = fold(folded.get(event.stream_id), event)
                moved[event.stream_id] = event.sequence
            await conn.execute("DELETE FROM tasks")
            if folded:
                rows = [task_row(task, moved[task_id]) for task_id, task in folded.items()]
                await conn.execute(INSERT_TASKS, *columns(rows, TASK_WIDTH))
            return len(folded)

        async with self._write_lock:
            committer.forget()
            return await committer.run_locked(swap)

    async def check_projection(self) -> list[str]:
        """Ids of tasks whose projection row differs from a fold of the log (sorted)."""

        async def run(conn: asyncpg.Connection) -> tuple[dict[str, TaskRow], dict[str, Any]]:
            return await fold_rows(scan(conn), self._event), await live_rows(conn)

        expected, live = await self._snapshot(run)
        return sorted(
            task_id
            for task_id in expected.keys() | live.keys()
            if expected.get(task_id) != live.get(task_id)
        )

    def subscribe(
        self, name: str, *, batch_size: int = 500, poll_interval: float = 0.5
    ) -> Subscription:
        """A :class:`Subscription` that follows the log from subscriber ``name``'s checkpoint."""
        return Subscription(self, name, batch_size=batch_size, poll_interval=poll_interval)
