"""Task queries written once for both backends: only the placeholders differ.

SQLite numbers nothing (``?``); PostgreSQL numbers its parameters (``$1``, ``$2``...) and
compares against arrays. A :class:`Params` hands out the right placeholder as each value is
added, so a filter is one function for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from tasktrail.errors import InvalidInputError, TaskNotFoundError
from tasktrail.ids import check_task_id
from tasktrail.lifecycle import TaskState
from tasktrail.store._claim import FUTURE_TOLERANCE, QueuePage

__all__ = [
    "ACTIVE_COUNTS",
    "COUNT_CAP",
    "FINAL_TYPES",
    "SORTS",
    "TASK_COUNTS",
    "Params",
    "TaskFilter",
    "count_rows",
    "count_sql",
    "check_limit",
    "cursor_sql",
    "finished_sql",
    "keyset",
    "list_sql",
    "next_at_sql",
    "paused_clause",
    "queue_sql",
    "resolve_cursor",
    "state_values",
    "task_clauses",
    "timestamp",
]

SORTS: Final = {"created": "created_at", "updated": "updated_at"}
"""The orders of a listing (``sort=``) and the column each sorts on; the creation order
(SQLite's ``rowid``, PostgreSQL's ``ord``) breaks ties."""
COUNT_CAP: Final = 1_000_000_000
"""``count_tasks`` without a limit counts at most this many (a bound, never reached)."""
_FINISHED: Final = "state IN ('completed', 'failed', 'cancelled')"
"""The predicate of the ``tasks_finished`` partial index, spelled as the index spells it
(a planner uses the index only for this very text, never for bound parameters)."""


class Params:
    """The parameters of one statement; ``add`` returns the placeholder of the value."""

    def __init__(self, *, numbered: bool) -> None:
        self.numbered = numbered
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        """Add one value; its placeholder."""
        self.values.append(value)
        return f"${len(self.values)}" if self.numbered else "?"

    def one_of(self, column: str, values: Iterable[Any]) -> str:
        """``column`` equals one of ``values``."""
        items = list(values)
        if self.numbered:
            return f"{column} = ANY({self.add(items)}::text[])"
        return f"{column} IN ({', '.join(self.add(v) for v in items)})"


def state_values(state: TaskState | str | Iterable[TaskState | str]) -> list[str]:
    """The state names of a ``state=`` filter (one state, or several)."""
    states = [state] if isinstance(state, str) else list(state)
    try:
        return [TaskState(s).value for s in states]
    except ValueError as err:
        raise InvalidInputError(
            f"unknown state in {state!r}; one of {', '.join(TaskState)}"
        ) from err


def check_limit(limit: object) -> int:
    """A listing's ``limit``: a whole number >= 0."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit must be a whole number >= 0, not {limit!r}")
    return limit


def timestamp(value: datetime | float | int, name: str) -> float:
    """Unix seconds of a time filter (an aware datetime, or unix seconds)."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidInputError(f"{name} must be an aware datetime (with tzinfo), or seconds")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} must be a datetime or unix seconds, not {value!r}")
    return float(value)


TaskFilter = dict[str, Any]
"""The keyword filters of ``list_tasks`` (see :func:`task_clauses`)."""


def task_clauses(
    p: Params,
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
) -> list[str]:
    """The conditions of a task listing, one per filter given; all must hold.

    ``state`` and ``agent`` may each be one value or several; ``since``/``until`` bound the
    creation time (``since`` inclusive, ``until`` exclusive); ``finished_since`` leaves out
    the tasks that finished before it (retention: unfinished tasks stay); ``worker_id`` is
    the worker that holds or last held the task (read from the record: no column, see
    ``docs/reference/store.md``); ``id_prefix`` matches the ids that start with it (the
    primary key's range on SQLite); ``only_finished_since`` keeps only the tasks finished
    at or after that time (the ``tasks_finished`` index).
    """
    clauses: list[str] = []
    if state is not None:
        clauses.append(p.one_of("state", state_values(state)))
    if agent is not None:
        agents = [agent] if isinstance(agent, str) else list(agent)
        if not all(isinstance(a, str) for a in agents):
            raise InvalidInputError(f"agent must be a str or several, not {agent!r}")
        clauses.append(p.one_of("agent", agents))
    if parent_id is not None:
        clauses.append(f"parent_id = {p.add(parent_id)}")
    if rerun_of is not None:
        clauses.append(f"rerun_of = {p.add(rerun_of)}")
    if since is not None:
        clauses.append(f"created_at >= {p.add(timestamp(since, 'since'))}")
    if until is not None:
        clauses.append(f"created_at < {p.add(timestamp(until, 'until'))}")
    if worker_id is not None:
        if not isinstance(worker_id, str):
            raise InvalidInputError(f"worker_id must be a str, not {worker_id!r}")
        field = "record::jsonb ->> 'worker_id'" if p.numbered else "record ->> '$.worker_id'"
        clauses.append(f"{field} = {p.add(worker_id)}")
    if id_prefix is not None:
        clauses.append(_prefix_clause(p, check_task_id(id_prefix)))
    if finished_since is not None:  # a finished task's last write is its finish
        moment = timestamp(finished_since, "finished_since")
        clauses.append(f"(state NOT IN ('completed', 'failed', 'cancelled') "
                       f"OR updated_at >= {p.add(moment)})")  # fmt: skip
    if only_finished_since is not None:
        moment = timestamp(only_finished_since, "only_finished_since")
        clauses.append(f"{_FINISHED} AND updated_at >= {p.add(moment)}")
    return clauses


def _prefix_clause(p: Params, prefix: str) -> str:
    """``id`` starts with ``prefix``: on SQLite a range of the primary key (text compares
    by code point there), on PostgreSQL ``starts_with`` (its collation may not)."""
    if p.numbered:
        return f"starts_with(id, {p.add(prefix)})"
    low = p.add(prefix)
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last < 0xE000:  # no surrogates in a valid id: skip their block
        last = 0xE000
    if last > 0x10FFFF:
        return f"id >= {low} AND substr(id, 1, {p.add(len(prefix))}) = {p.add(prefix)}"
    return f"id >= {low} AND id < {p.add(prefix[:-1] + chr(last))}"


def keyset(p: Params, *, column: str, order: str, at: tuple[float, int], descending: bool) -> str:
    """Rows strictly after ``at`` = (``column`` value, creation order) in the order
    ``column, order`` (both descending or both ascending).

    Spelled as a range on ``column`` first, then the tie on the creation order, so an index
    on ``column`` (every SQLite index ends with the rowid; PostgreSQL's listing indexes end
    with ``ord``) serves it: the 1,000th page costs what the first does. The dashboard's
    pages use it too.
    """
    sign = "<" if descending else ">"
    bound, again, rank = p.add(at[0]), p.add(at[0]), p.add(at[1])
    return f"{column} {sign}= {bound} AND ({column} {sign} {again} OR {order} {sign} {rank})"


def cursor_sql(p: Params, *, task_id: str, sort: str, order: str) -> str:
    """The keyset position of one task in a listing sorted by ``sort``."""
    return f"SELECT {_sort_column(sort)}, {order} FROM tasks WHERE id = {p.add(task_id)}"


def _sort_column(sort: str) -> str:
    try:
        return SORTS[sort]
    except (KeyError, TypeError):
        raise InvalidInputError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}") from None


def list_sql(
    p: Params,
    filters: TaskFilter,
    *,
    order: str,
    sort: str = "created",
    newest_first: bool = False,
    after: tuple[float, int] | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> str:
    """One page of a task listing: the tasks matching ``filters`` (see :func:`task_clauses`)
    in ``sort`` order, after the keyset position ``after`` (see :func:`cursor_sql`), past
    ``offset`` more rows, at most ``limit``."""
    column = _sort_column(sort)
    clauses = task_clauses(p, **filters)
    if after is not None:
        clauses.append(keyset(p, column=column, order=order, at=after, descending=newest_first))
    direction = "DESC" if newest_first else "ASC"
    sql = f"SELECT record FROM {_source(p, filters)}"
    if clauses:
        sql += f" WHERE {' AND '.join(clauses)}"
    sql += f" ORDER BY {column} {direction}, {order} {direction}"
    if limit is not None:
        sql += f" LIMIT {p.add(check_limit(limit))}"
    if offset:
        if limit is None and not p.numbered:
            sql += " LIMIT -1"  # SQLite has no OFFSET without a LIMIT
        sql += f" OFFSET {p.add(_count('offset', offset))}"
    return sql


def count_sql(
    p: Params,
    filters: TaskFilter,
    *,
    order: str,
    limit: int | None = None,
    sort: str = "created",
    newest_first: bool = False,
    after: tuple[float, int] | None = None,
) -> str:
    """How many tasks match ``filters`` (after the keyset position ``after`` in the order
    ``sort``/``newest_first``), counting at most ``limit``: a bounded count reads at most
    that many index entries."""
    bound = COUNT_CAP if limit is None else _count("limit", limit)
    clauses = task_clauses(p, **filters)
    if after is not None:
        column = _sort_column(sort)
        clauses.append(keyset(p, column=column, order=order, at=after, descending=newest_first))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    source = _source(p, filters)
    return f"SELECT count(*) FROM (SELECT 1 FROM {source}{where} LIMIT {p.add(bound)}) AS matching"


def _source(p: Params, filters: TaskFilter) -> str:
    """The table to read: SQLite is told to use the index of finished tasks for
    ``only_finished_since`` (without statistics it would walk ``tasks_by_state``)."""
    if filters.get("only_finished_since") is not None and not p.numbered:
        return "tasks INDEXED BY tasks_finished"
    return "tasks"


ACTIVE_COUNTS: Final = (
    "SELECT coalesce(concurrency_key, agent), count(*) FROM tasks "
    "WHERE state IN ('starting', 'running') GROUP BY 1"
)
"""Tasks holding a slot (starting/running) per limit key (concurrency key, else agent)."""
TASK_COUNTS: Final = "SELECT agent, state, count(*) FROM tasks GROUP BY agent, state"
"""Tasks per agent and state: the ``tasks_by_agent`` index (agent, state) covers it."""


def count_rows(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """{agent: {state: count}} from rows of :data:`TASK_COUNTS`, agents sorted."""
    counts: dict[str, dict[str, int]] = {}
    for agent, state, count in sorted(rows, key=lambda row: (str(row[0]), str(row[1]))):
        counts.setdefault(str(agent), {})[str(state)] = int(count)
    return counts


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be an int >= 0, not {value!r}")
    return value


def resolve_cursor(task_id: str, row: Sequence[Any] | None) -> tuple[float, int]:
    """The keyset position read by :func:`cursor_sql`; TaskNotFoundError without a row."""
    if row is None:
        raise TaskNotFoundError(task_id)
    return float(row[0]), int(row[1])


def paused_clause(p: Params, agents: Iterable[str], keys: Iterable[str]) -> str:
    """SQL: the task is of none of the paused ``agents`` and its limit key is none of the
    paused ``keys`` (``""`` when nothing is paused)."""
    parts = []
    agents, keys = list(agents), list(keys)
    if agents:
        parts.append("NOT " + p.one_of("agent", agents))
    if keys:
        parts.append("NOT " + p.one_of("coalesce(concurrency_key, agent)", keys))
    return " AND ".join(parts)


def queue_sql(page: QueuePage, p: Params, *, order: str) -> str:
    """One page of the start queue: pending, due, outside the full and the paused keys and
    agents, in start order: ``(priority, created_at, position, record)`` rows.

    ``order`` is the column of insertion order (SQLite's ``rowid``, PostgreSQL's ``ord``),
    the tie-break between tasks created in one commit. A task whose last write lies more
    than :data:`FUTURE_TOLERANCE` ahead is due whatever its ``not_before`` says.

    Each agent's queue is read in order from the ``tasks_queue_by_agent`` index and stops
    after the page; several agents' pages are merged (a claim's cost never grows with the
    backlog). Without ``agents`` the ``tasks_queue`` index gives every agent's queue.
    """
    if page.agents is None:
        return _queue_part(page, p, order=order, agent=None)
    paused = set(page.paused_agents)
    agents = [agent for agent in page.agents if agent not in paused]
    if not agents:
        return f"SELECT priority, created_at, {order}, record FROM tasks WHERE 0 = 1"
    if len(agents) == 1:
        return _queue_part(page, p, order=order, agent=agents[0])
    parts = " UNION ALL ".join(
        f"SELECT * FROM ({_queue_part(page, p, order=order, agent=agent)}) AS queue_{n}"
        for n, agent in enumerate(agents)
    )
    return f"{parts} ORDER BY 1 DESC, 2, 3 LIMIT {p.add(page.limit)}"


def _queue_part(page: QueuePage, p: Params, *, order: str, agent: str | None) -> str:
    """The page of one agent's queue (``agent``), or of every agent's (SQLite, without
    statistics, would rather sort every pending task than walk ``tasks_queue``)."""
    source = "tasks INDEXED BY tasks_queue" if agent is None and not p.numbered else "tasks"
    sql = (
        f"SELECT priority, created_at, {order} AS position, record FROM {source} "
        "WHERE state = 'pending' "
        f"AND (not_before IS NULL OR not_before <= {p.add(page.now)} "
        f"OR updated_at > {p.add(page.now + FUTURE_TOLERANCE)})"
    )
    if agent is not None:
        sql += f" AND agent = {p.add(agent)}"
    if page.task_ids is not None:
        sql += " AND " + p.one_of("id", page.task_ids)
    if page.full_keys:
        sql += " AND NOT " + p.one_of("coalesce(concurrency_key, agent)", page.full_keys)
    paused_agents = page.paused_agents if agent is None else ()
    if paused := paused_clause(p, paused_agents, page.paused_keys):
        sql += " AND " + paused
    if page.after is not None:  # each placeholder once: SQLite's ? are positional
        priority, created, position = page.after
        sql += (
            f" AND (priority < {p.add(priority)} OR (priority = {p.add(priority)} AND "
            f"(created_at > {p.add(created)} OR (created_at = {p.add(created)} "
            f"AND {order} > {p.add(position)}))))"
        )
    return sql + f" ORDER BY priority DESC, created_at, {order} LIMIT {p.add(page.limit)}"


def next_at_sql(
    p: Params, *, now: float, agents: Iterable[str] | None, task_ids: Iterable[str] | None
) -> str:
    """The earliest scheduled start after ``now`` among the pending tasks asked about."""
    sql = f"SELECT min(not_before) FROM tasks WHERE state = 'pending' AND not_before > {p.add(now)}"
    if agents is not None:
        sql += " AND " + p.one_of("agent", agents)
    if task_ids is not None:
        sql += " AND " + p.one_of("id", task_ids)
    return sql


FINAL_TYPES: Final = ("task.completed", "task.failed", "task.cancelled")


def finished_sql(p: Params, *, after: int, upto: int, with_parent: bool) -> str:
    """The final events with a sequence number in ``(after, upto]``, with their task's
    record: ``(seq, event_id, record)`` rows in log order."""
    sql = (
        "SELECT e.seq, e.event_id, t.record FROM events e JOIN tasks t ON t.id = e.stream_id "
        f"WHERE e.seq > {p.add(after)} AND e.seq <= {p.add(upto)} AND "
        + p.one_of("e.type", FINAL_TYPES)
    )
    if with_parent:
        sql += " AND t.parent_id IS NOT NULL"
    return sql + " ORDER BY e.seq"
