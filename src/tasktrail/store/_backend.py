"""What both event stores share: every method whose logic is the same on SQLite and on
PostgreSQL, written once over a few driver hooks.

A backend (:class:`~tasktrail.store.sqlite.SQLiteEventStore`,
:class:`~tasktrail.store.postgres.PostgresEventStore`) supplies its dialect as class
attributes (placeholders, the creation-order column, its SQL for the stream probes) and
its driver calls as methods (:class:`~._driver.Driver`: ``_rows`` reads, ``_write_row``
writes one operational row; ``_write_control`` records a pause or resume;
``_fold_and_live`` reads the log's fold and the projection in one snapshot). Opening,
closing, waiting, ``verify`` and ``rebuild`` stay with the backend. The same pattern as
:class:`~tasktrail.store._commit.GroupCommitter`: the frame once, the driver calls per
backend. The projection's reads are in :mod:`._task_queries`, the operational tables
(pauses, workers, checkpoints) in :mod:`._operational`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Self, TypeVar, cast

from tasktrail.errors import (
    CorruptEventError,
    StorageError,
    StoreClosedError,
    TaskNotFoundError,
)
from tasktrail.events import BUILTIN_UPCASTERS, NewEvent, RecordedEvent, Upcaster, decode_payload
from tasktrail.ids import check_task_id
from tasktrail.projection import Task
from tasktrail.store._append import prepare_append
from tasktrail.store._claim import ClaimRequest, ClaimResult
from tasktrail.store._commit import GroupCommitter
from tasktrail.store._latency import CommitStatistics, LatencyHistogram
from tasktrail.store._operational import OperationalTables
from tasktrail.store._plan import AppendResult, TaskRow
from tasktrail.store._replay import check_state_at, replay_chunks
from tasktrail.store._stream import (
    DEFAULT_CHUNK_BYTES,
    STREAM_MAX_ROWS,
    bounded_chunks,
    check_chunk_bytes,
    check_versions,
)
from tasktrail.store._task_queries import TaskQueries
from tasktrail.store.subscription import Subscription

if TYPE_CHECKING:
    from tasktrail.store.base import EventStore

__all__ = ["Backend"]

_ROW_NAMES: Final = (
    "seq", "event_id", "stream_id", "version", "type", "schema_version", "recorded_at",
    "actor", "reason", "correlation_id", "data", "hash",
)  # fmt: skip
_ROW_TYPES: Final[tuple[type | tuple[type, ...], ...]] = (
    int, str, str, int, str, int, (float, int), str, (str, type(None)), (str, type(None)),
    (bytes, str), str,
)  # fmt: skip
"""What each column of an event row must hold: a damaged SQLite record can hold another
type in any column, which must be a typed error, not a wrong value or a TypeError."""

C = TypeVar("C", bound=GroupCommitter)


class Backend(TaskQueries, OperationalTables, Generic[C]):
    """The methods of the store contract that both backends share (see the module)."""

    _VERSION_TOP: ClassVar[int]
    """The largest version a stream query may name (the type of the version column)."""
    _EVENT_COLUMNS: ClassVar[str]
    """The columns of an event row, in the order the hash covers them, payload as bytes."""
    _STREAM_SIZES: ClassVar[tuple[str, str]]
    """(row by row, whole window) payload sizes of a stream: see :mod:`._stream`."""
    _STREAM_ROWS: ClassVar[str]
    """The event rows of a stream with ``after < version <= upto``."""

    _committer: C | None
    _opened: bool
    _closing: bool
    max_event_bytes: int
    _broken: StorageError | None = None
    """Set when the store can no longer be trusted (SQLite: its ``-wal`` file vanished)."""

    def _init_backend(
        self, *, clock: Callable[[], float], upcasters: Mapping[tuple[str, int], Upcaster] | None
    ) -> None:
        self._clock = clock
        self._upcasters = {**BUILTIN_UPCASTERS, **(upcasters or {})}
        self._committer = None
        self._closing = False
        self._opened = False

    # -- what a backend supplies ------------------------------------------------------------

    @abstractmethod
    async def _fold_and_live(self) -> tuple[dict[str, TaskRow], dict[str, Any]]:
        """(the projection rows folded from the log, the stored ones), from one snapshot."""

    # -- opening and closing ----------------------------------------------------------------

    @abstractmethod
    async def open(self) -> Self: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> C:
        """The committer of an open store; StoreClosedError (or the reason the store
        stopped) otherwise."""
        committer = self._committer
        if not self._opened or self._closing or committer is None:
            raise StoreClosedError()
        if self._broken is not None:
            raise self._broken
        return committer

    # -- appending --------------------------------------------------------------------------

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

        ``expected_version`` is the stream's version the caller based its decision on
        (0: the task must not exist yet); ``None`` skips that check. Every event is
        checked against the lifecycle. Appending the same :class:`NewEvent` objects again
        returns the stored result with ``duplicate=True`` and writes nothing. With
        ``limit``, an append that starts the task (pending to starting/running) is refused
        with ConcurrencyLimitError when ``limit`` tasks of its limit key (concurrency key,
        else agent) are already starting or running, checked under the write lock
        (PostgreSQL: the log's advisory lock, so across every process and host). With
        ``fence=(worker_id, attempt)`` the append is an attempt's: refused with
        AttemptSupersededError unless that attempt still holds the task.

        Raises VersionConflictError, IllegalTransitionError, TaskExistsError,
        TaskNotFoundError, EventIdConflictError, InvalidInputError or StorageError; in
        every case nothing of this append was written.
        """
        committer = self._check_open()
        request = prepare_append(
            stream_id,
            events,
            expected_version,
            max_event_bytes=self.max_event_bytes,
        )
        request.limit = limit
        request.fence = fence
        result: AppendResult = await committer.submit(request)
        return result

    async def claim(self, request: ClaimRequest) -> ClaimResult:
        """Claim startable tasks for a worker in the next group commit, under the write
        lock (PostgreSQL: the log's advisory lock, so no two workers of any host ever claim
        one task; see :mod:`tasktrail.store._claim`); returns them as the claims left them."""
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

    # -- reading ----------------------------------------------------------------------------

    def _event(self, row: Sequence[Any]) -> RecordedEvent:
        for column, (value, kinds) in enumerate(zip(row, _ROW_TYPES, strict=True)):
            if not isinstance(value, kinds):  # SQLite keeps any type in any column
                raise CorruptEventError(
                    row[0] if isinstance(row[0], int) else 0,
                    f"its column {_ROW_NAMES[column]} holds {type(value).__name__} {value!r:.40}",
                )
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
        last = self._VERSION_TOP if to_version is None else min(to_version, self._VERSION_TOP)
        p = self._params()
        rows = await self._rows(
            f"SELECT {self._EVENT_COLUMNS} FROM events WHERE stream_id = {p.add(stream_id)} "
            f"AND version > {p.add(after_version)} AND version <= {p.add(last)} ORDER BY version",
            p.values,
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
        alone), so memory does not grow with the task's output. Nothing for an unknown
        task. Each chunk is read by short queries: no snapshot (and no connection) is held
        between chunks.
        """
        check_task_id(stream_id)
        after, last = check_versions(after_version, to_version, top=self._VERSION_TOP)
        return self._iter_stream(stream_id, after, last, check_chunk_bytes(chunk_bytes))

    async def _iter_stream(
        self, stream_id: str, after: int, last: int, budget: int
    ) -> AsyncIterator[list[RecordedEvent]]:
        async def probe(after: int, n: int, each: bool) -> list[Any]:
            return await self._rows(self._STREAM_SIZES[not each], (stream_id, after, last, n))

        async def fetch(after: int, upto: int) -> list[RecordedEvent]:
            rows = await self._rows(self._STREAM_ROWS, (stream_id, after, upto))
            return [self._event(row) for row in rows]

        async for events in bounded_chunks(
            probe, fetch, after=after, budget=budget, max_rows=STREAM_MAX_ROWS
        ):
            yield events

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events of the whole log with a sequence number above ``after``.

        Never skips a committed event: events commit in sequence order.
        """
        p = self._params()
        rows = await self._rows(
            f"SELECT {self._EVENT_COLUMNS} FROM events WHERE seq > {p.add(after)} "
            f"ORDER BY seq LIMIT {p.add(limit)}",
            p.values,
        )
        return [self._event(row) for row in rows]

    async def head(self) -> int:
        """The sequence number of the last committed event (0 for an empty log)."""
        rows = await self._rows("SELECT coalesce(max(seq), 0) FROM events")
        return int(rows[0][0])

    async def history(self, task_id: str) -> list[RecordedEvent]:
        """Every event of a task, in order. Raises TaskNotFoundError for an unknown id."""
        events = await self.read_stream(task_id)
        if not events:
            raise TaskNotFoundError(task_id)
        return events

    async def state_at(
        self, task_id: str, *, version: int | None = None, at: datetime | float | None = None
    ) -> Task | None:
        """The task as it was at ``version``, or at time ``at`` (the latest if neither).

        ``at`` (an aware datetime, or unix seconds) selects the events up to the first one
        recorded after it, so a clock that stepped back never yields a state that did not
        exist. Returns ``None`` when the task did not exist yet at ``at``; raises
        TaskNotFoundError when it never existed.
        """
        check_state_at(version, at)
        return await replay_chunks(
            task_id, self.iter_stream(task_id, to_version=version), version=version, at=at
        )

    # -- checking ---------------------------------------------------------------------------

    async def check_projection(self) -> list[str]:
        """Ids of tasks whose projection row differs from a fold of the log (sorted)."""
        expected, live = await self._fold_and_live()
        return sorted(
            task_id
            for task_id in expected.keys() | live.keys()
            if expected.get(task_id) != live.get(task_id)
        )

    def subscribe(
        self, name: str, *, batch_size: int = 500, poll_interval: float = 0.5
    ) -> Subscription:
        """A :class:`Subscription` that follows the log from subscriber ``name``'s checkpoint."""
        store = cast("EventStore", self)  # a complete backend is one
        return Subscription(store, name, batch_size=batch_size, poll_interval=poll_interval)
