"""The dashboard's own queries: a page of tasks newest first, counts, recent finishes.

The store lists tasks, but neither pages them by key nor counts them, and the dashboard
needs both to stay fast on a log of 100,000 tasks. These few read-only queries run on a
connection of their own (``query_only`` on SQLite, a small pool on PostgreSQL) and use the
indexes of migrations 3 and 4 (``tasks_by_created``, ``tasks_by_agent_created``,
``tasks_finished``):

* a page is a keyset query, newest first, on ``(created_at, rowid)`` (PostgreSQL:
  ``ord``), so the 2,000th page costs what the first does;
* counts per state and per agent read only the indexes that cover them;
* the finished tasks of the last hour come from the partial index of finished tasks.

Everything else the dashboard shows comes from the store's own API.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import aiosqlite

from tasktrail.errors import InvalidInputError, StoreClosedError
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.store import POSTGRES_SCHEMES
from tasktrail.store._plan import decode_task
from tasktrail.store._query import Params, keyset, task_clauses
from tasktrail.store._sqlite_errors import translating
from tasktrail.store._sqlite_open import connect
from tasktrail.store._sqlite_scan import fetch_all
from tasktrail.store._validate import redact_url

__all__ = ["Cursor", "Page", "Reader", "TaskFilter", "open_reader"]

MAX_TEXT: Final = 200
"""The longest text filter accepted."""
_TERMINAL_SQL: Final = "state IN ('completed', 'failed', 'cancelled')"
"""The predicate of the ``tasks_finished`` partial index, spelled as the index spells it."""
_TEXT_FIELDS: Final = ("prompt", "description", "error")


class Cursor(NamedTuple):
    """A position in the newest-first order: a task's creation time and creation order."""

    created_at: float
    order: int

    def encode(self) -> str:
        """The cursor as it appears in a URL."""
        return f"{self.created_at!r}_{self.order}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a cursor from a URL; a malformed one is an InvalidInputError."""
        created, _, order = text.partition("_")
        try:
            cursor = cls(float(created), int(order))
        except ValueError:
            raise InvalidInputError(f"not a page position: {text[:40]!r}") from None
        if not math.isfinite(cursor.created_at):
            raise InvalidInputError(f"not a page position: {text[:40]!r}")
        return cursor


@dataclass(frozen=True)
class TaskFilter:
    """What the task list shows: every filter given must match."""

    state: TaskState | None = None
    agent: str | None = None
    parent_id: str | None = None
    text: str | None = None
    """Case-insensitive: part of the id, prompt, description or error."""

    @classmethod
    def parse(
        cls,
        *,
        state: str | None = None,
        agent: str | None = None,
        parent_id: str | None = None,
        text: str | None = None,
    ) -> TaskFilter:
        """A filter from the query string's values (blank means no filter)."""
        chosen: TaskState | None = None
        if state:
            try:
                chosen = TaskState(state)
            except ValueError:
                raise InvalidInputError(
                    f"unknown state {state[:40]!r}: one of {', '.join(TaskState)}"
                ) from None
        text = (text or "").strip()
        if len(text) > MAX_TEXT:
            raise InvalidInputError(f"the text filter is longer than {MAX_TEXT} characters")
        return cls(chosen, (agent or "").strip() or None, (parent_id or "").strip() or None,
                   text or None)  # fmt: skip

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(v is not None for v in (self.state, self.agent, self.parent_id, self.text))

    def matches(self, task: Task) -> bool:
        """Whether ``task`` passes the filter (the same rule as the query's)."""
        if self.state is not None and task.state is not self.state:
            return False
        if self.agent is not None and task.agent != self.agent:
            return False
        if self.parent_id is not None and task.parent_id != self.parent_id:
            return False
        if self.text is not None:
            needle = self.text.lower()
            fields = (task.id, task.prompt, task.description, task.error or "")
            return any(needle in field.lower() for field in fields)
        return True


@dataclass(frozen=True)
class Page:
    """One page of the task list, newest first."""

    tasks: list[Task]
    newer: Cursor | None
    """Where the page before this one (newer tasks) ends, if there may be one."""
    older: Cursor | None
    """Where the page after this one (older tasks) starts, if there is one."""


class Reader(abc.ABC):
    """The dashboard's read-only queries on one database."""

    order_column: str
    """The column that breaks ties of ``created_at``: the order of creation."""

    @abc.abstractmethod
    async def open(self) -> Reader: ...
    @abc.abstractmethod
    async def close(self) -> None: ...
    @abc.abstractmethod
    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]: ...
    @abc.abstractmethod
    def _mark(self, number: int) -> str:
        """The placeholder of the ``number``-th parameter (from 1)."""

    @abc.abstractmethod
    def _contains(self, field: str, needle: str) -> str:
        """SQL: whether the record's text ``field``, lower-cased, holds ``needle``."""

    @abc.abstractmethod
    def _like(self, column: str, pattern: str) -> str:
        """SQL: ``column`` matches the LIKE ``pattern`` (escape ``\\``), ignoring case."""

    _finished_index = ""
    _floor = "floor({})::int"

    async def page(
        self,
        where: TaskFilter,
        *,
        before: Cursor | None = None,
        after: Cursor | None = None,
        limit: int = 50,
    ) -> Page:
        """Tasks matching ``where``, newest first: the first page, the page of tasks older
        than ``before``, or the page of tasks newer than ``after``."""
        if before is not None and after is not None:
            raise InvalidInputError("give a page position before or after, not both")
        # The store's query builder: its filters and its keyset (one copy of each).
        p = Params(numbered=self.order_column == "ord")
        clauses = task_clauses(
            p,
            state=None if where.state is None else where.state.value,
            agent=where.agent,
            parent_id=where.parent_id,
        )
        if where.text is not None:
            needle = where.text.lower()
            if _verbatim_in_json(needle):
                # Cheap first: the needle somewhere in the record's JSON text (a scan with no
                # JSON parsing); then exactly: in one of the fields.
                escaped = needle.replace("%", "\\%").replace("_", "\\_")
                clauses.append(self._like("record", p.add(f"%{escaped}%")))
            tests = [self._contains(name, p.add(needle)) for name in ("id", *_TEXT_FIELDS)]
            clauses.append(f"({' OR '.join(tests)})")
        order = self.order_column
        cursor = before or after
        if cursor is not None:
            clauses.append(
                keyset(p, column="created_at", order=order, at=cursor, descending=after is None)
            )
        direction = "ASC" if after is not None else "DESC"
        sql = (
            f"SELECT record, created_at, {order} FROM tasks"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + f" ORDER BY created_at {direction}, {order} {direction} LIMIT {p.add(limit + 1)}"
        )
        params = p.values
        rows = list(await self._fetch(sql, params))
        more = len(rows) > limit
        rows = rows[:limit]
        if after is not None:
            rows.reverse()
        tasks = [decode_task(row[0]) for row in rows]
        first = Cursor(float(rows[0][1]), int(rows[0][2])) if rows else None
        last = Cursor(float(rows[-1][1]), int(rows[-1][2])) if rows else None
        newer: Cursor | None
        older: Cursor | None
        if after is not None:
            newer, older = (first if more else None), (last or after)
        else:
            newer = first if before is not None else None
            older = last if more else None
        return Page(tasks, newer, older)

    async def state_counts(self) -> dict[str, int]:
        """How many tasks are in each state (every state present, 0 if none)."""
        rows = await self._fetch("SELECT state, count(*) FROM tasks GROUP BY state", ())
        counts = {state.value: 0 for state in TaskState}
        counts.update({str(state): int(count) for state, count in rows})
        return counts

    async def agent_counts(self) -> dict[str, dict[str, int]]:
        """How many tasks each agent has in each state."""
        rows = await self._fetch(
            "SELECT agent, state, count(*) FROM tasks GROUP BY agent, state ORDER BY agent", ()
        )
        counts: dict[str, dict[str, int]] = {}
        for agent, state, count in rows:
            counts.setdefault(str(agent), {s.value: 0 for s in TaskState})[str(state)] = int(count)
        return counts

    async def finished_per_minute(self, since: float) -> dict[tuple[int, str], int]:
        """How many tasks finished in each state in each minute from ``since``: keyed by
        (minutes after ``since``, state)."""
        rows = await self._fetch(
            f"SELECT {self._floor.format(f'(updated_at - {self._mark(1)}) / 60')}, state, "
            f"count(*) FROM tasks {self._finished_index}WHERE {_TERMINAL_SQL} "
            f"AND updated_at >= {self._mark(2)} GROUP BY 1, 2",
            (since, since),
        )
        return {(int(minute), str(state)): int(count) for minute, state, count in rows}

    async def locate(self, sequence: int) -> tuple[str, int] | None:
        """(task id, version) of the event at ``sequence``, read raw: it works on a log
        whose event there no longer decodes."""
        rows = await self._fetch(
            f"SELECT stream_id, version FROM events WHERE seq = {self._mark(1)}", (sequence,)
        )
        return (str(rows[0][0]), int(rows[0][1])) if rows else None


class SQLiteReader(Reader):
    """The queries on a SQLite file, through a ``query_only`` connection of their own."""

    order_column = "rowid"

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> SQLiteReader:
        with translating(self.path):
            self._db = await connect(self.path, busy_timeout=10.0, synchronous="NORMAL")
            await self._db.execute("PRAGMA query_only = ON")
        return self

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        if self._db is None:
            raise StoreClosedError()
        with translating(self.path):
            return await fetch_all(self._db, sql, params)

    def _mark(self, number: int) -> str:
        return "?"

    def _contains(self, field: str, needle: str) -> str:
        value = field if field == "id" else f"coalesce(record ->> '$.{field}', '')"
        return f"instr(lower({value}), {needle}) > 0"

    def _like(self, column: str, pattern: str) -> str:
        return f"{column} LIKE {pattern} ESCAPE '\\'"

    # Without statistics SQLite would rather walk tasks_by_state for the IN list.
    _finished_index = "INDEXED BY tasks_finished "
    _floor = "CAST({} AS INTEGER)"  # never negative here: truncation is the floor


class PostgresReader(Reader):
    """The queries on PostgreSQL, through a small pool of their own."""

    order_column = "ord"

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact_url(url)
        self._pool: Any = None

    async def open(self) -> PostgresReader:
        import asyncpg  # the [postgres] extra: only here

        from tasktrail.store._pg_errors import retrying

        self._pool = await retrying(
            lambda: asyncpg.create_pool(self.url, min_size=1, max_size=2, timeout=10),
            where=self.where,
            timeout=30.0,
        )
        return self

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        from tasktrail.store._pg_errors import retrying

        pool = self._pool
        if pool is None:
            raise StoreClosedError()

        async def once() -> list[Sequence[Any]]:
            async with pool.acquire() as conn:
                return list(await conn.fetch(sql, *params))

        return await retrying(once, where=self.where, timeout=30.0)

    def _mark(self, number: int) -> str:
        return f"${number}"

    def _contains(self, field: str, needle: str) -> str:
        value = field if field == "id" else f"coalesce(record::jsonb ->> '{field}', '')"
        return f"strpos(lower({value}), {needle}) > 0"

    def _like(self, column: str, pattern: str) -> str:
        return f"{column} ILIKE {pattern} ESCAPE '\\'"


def _verbatim_in_json(text: str) -> bool:
    """Whether ``text``, inside a string, appears as is in its JSON encoding (JSON escapes
    only quotes, backslashes and control characters)."""
    return text.isprintable() and '"' not in text and "\\" not in text


def open_reader(database: str) -> Reader:
    """The reader for ``database`` (a SQLite path or a ``postgresql://`` URL), not open yet."""
    if database.startswith(POSTGRES_SCHEMES):
        return PostgresReader(database)
    return SQLiteReader(database)
