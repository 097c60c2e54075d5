"""Task queries written once for both backends: only the placeholders differ.

SQLite numbers nothing (``?``); PostgreSQL numbers its parameters (``$1``, ``$2``...) and
compares against arrays. A :class:`Params` hands out the right placeholder as each value is
added, so a filter is one function for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from tasktrail.errors import InvalidInputError
from tasktrail.lifecycle import TaskState
from tasktrail.store._claim import FUTURE_TOLERANCE, QueuePage
from tasktrail.store._shared import state_values

__all__ = [
    "FINAL_TYPES",
    "Params",
    "check_limit",
    "TaskFilter",
    "finished_sql",
    "next_at_sql",
    "queue_sql",
    "task_where",
    "timestamp",
]


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
"""The keyword filters of ``list_tasks`` (see :func:`task_where`)."""


def task_where(
    p: Params,
    *,
    state: TaskState | str | Iterable[TaskState | str] | None = None,
    agent: str | Iterable[str] | None = None,
    parent_id: str | None = None,
    rerun_of: str | None = None,
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    finished_since: float | None = None,
) -> str:
    """The ``WHERE`` clause (or ``""``) of a task listing: every filter given must hold.

    ``state`` and ``agent`` may each be one value or several; ``since``/``until`` bound the
    creation time (``since`` inclusive, ``until`` exclusive); ``finished_since`` leaves out
    the tasks that finished before it (unix seconds).
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
    if finished_since is not None:  # a finished task's last write is its finish
        clauses.append(
            "(state NOT IN ('completed', 'failed', 'cancelled') "
            f"OR updated_at >= {p.add(finished_since)})"
        )
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def queue_sql(page: QueuePage, p: Params, *, order: str) -> str:
    """One page of the start queue: pending, due, outside the full keys, in start order.

    ``order`` is the column of insertion order (SQLite's ``rowid``, PostgreSQL's ``ord``),
    the tie-break between tasks created in one commit. A task whose last write lies more
    than :data:`FUTURE_TOLERANCE` ahead is due whatever its ``not_before`` says.
    """
    sql = (
        f"SELECT priority, created_at, {order}, record FROM tasks WHERE state = 'pending' "
        f"AND (not_before IS NULL OR not_before <= {p.add(page.now)} "
        f"OR updated_at > {p.add(page.now + FUTURE_TOLERANCE)})"
    )
    if page.agents is not None:
        sql += " AND " + p.one_of("agent", page.agents)
    if page.task_ids is not None:
        sql += " AND " + p.one_of("id", page.task_ids)
    if page.full_keys:
        sql += " AND NOT " + p.one_of("coalesce(concurrency_key, agent)", page.full_keys)
    if page.after is not None:
        priority, created, position = (p.add(value) for value in page.after)
        sql += (
            f" AND (priority < {priority} OR (priority = {priority} AND (created_at > {created} "
            f"OR (created_at = {created} AND {order} > {position}))))"
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
