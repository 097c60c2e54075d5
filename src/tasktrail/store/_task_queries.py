"""The reads of the task projection, written once for both backends: only the
placeholders and the creation-order column differ (:mod:`._query`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from tasktrail.ids import check_task_id
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.store._driver import Driver
from tasktrail.store._plan import decode_task
from tasktrail.store._query import (
    ACTIVE_COUNTS,
    TASK_COUNTS,
    TaskFilter,
    count_rows,
    count_sql,
    cursor_sql,
    finished_sql,
    list_sql,
    resolve_cursor,
)

__all__ = ["TaskQueries"]


class TaskQueries(Driver):
    """``get_task``, ``list_tasks`` and the other reads of the ``tasks`` table."""

    @abstractmethod
    async def head(self) -> int: ...

    async def _records(self, sql: str, params: Sequence[Any]) -> list[Task]:
        return [decode_task(row[0]) for row in await self._rows(sql, params)]

    async def get_task(self, task_id: str) -> Task | None:
        """The current state of a task, or ``None`` if there is no such task."""
        p = self._params()
        tasks = await self._records(
            f"SELECT record FROM tasks WHERE id = {p.add(check_task_id(task_id))}", p.values
        )
        return tasks[0] if tasks else None

    async def get_tasks(self, task_ids: Iterable[str]) -> list[Task]:
        """The current state of each task that exists among ``task_ids``."""
        ids = [check_task_id(task_id) for task_id in task_ids]
        tasks: list[Task] = []
        for start in range(0, len(ids), self._IDS_PER_QUERY):
            p = self._params()
            chunk = ids[start : start + self._IDS_PER_QUERY]
            tasks += await self._records(
                "SELECT record FROM tasks WHERE " + p.one_of("id", chunk), p.values
            )
        return tasks

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
        """Tasks matching every filter given, oldest first (``newest_first``: newest first).

        ``state`` and ``agent`` may each be one value or several; ``since`` (inclusive)
        and ``until`` (exclusive) bound the creation time (aware datetimes or unix seconds);
        ``finished_since`` leaves out the tasks that finished before it (retention);
        ``worker_id`` is the worker that holds or last held the task; ``id_prefix`` keeps
        the ids that start with it; ``only_finished_since`` keeps only the tasks finished
        at or after then.

        Paging: ``sort`` is ``"created"`` (creation time) or ``"updated"`` (the last
        change); ``after_id`` continues after that task in this order (a keyset position:
        the page after the thousandth costs what the first does; TaskNotFoundError if
        there is no such task); ``offset`` skips that many more.
        """
        filters: TaskFilter = {
            "state": state, "agent": agent, "parent_id": parent_id, "rerun_of": rerun_of,
            "since": since, "until": until, "worker_id": worker_id, "id_prefix": id_prefix,
            "finished_since": finished_since, "only_finished_since": only_finished_since,
        }  # fmt: skip
        after = await self._cursor(after_id, sort)
        p = self._params()
        sql = list_sql(
            p, filters, order=self._ORDER, sort=sort, newest_first=newest_first, after=after,
            offset=offset, limit=limit,
        )  # fmt: skip
        return await self._records(sql, p.values)

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
        after = await self._cursor(after_id, sort)
        p = self._params()
        sql = count_sql(
            p, filters, order=self._ORDER, limit=limit, sort=sort, newest_first=newest_first,
            after=after,
        )  # fmt: skip
        rows = await self._rows(sql, p.values)
        return int(rows[0][0])

    async def _cursor(self, after_id: str | None, sort: str) -> tuple[float, int] | None:
        """The keyset position of the task ``after_id`` in the order ``sort``."""
        if after_id is None:
            return None
        p = self._params()
        sql = cursor_sql(p, task_id=check_task_id(after_id), sort=sort, order=self._ORDER)
        rows = await self._rows(sql, p.values)
        return resolve_cursor(after_id, rows[0] if rows else None)

    async def task_counts(self) -> dict[str, dict[str, int]]:
        """How many tasks each agent has in each state (states without tasks left out),
        read from the ``tasks_by_agent`` index alone."""
        return count_rows(await self._rows(TASK_COUNTS))

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
        p = self._params()
        sql = "SELECT record FROM tasks WHERE state = 'pending'"
        if agents is not None:
            sql += " AND " + p.one_of("agent", agents)
        if created_before is not None:
            sql += f" AND created_at <= {p.add(float(created_before))}"
        sql += f" ORDER BY priority DESC, created_at, {self._ORDER} LIMIT {p.add(limit)}"
        return await self._records(sql, p.values)

    async def expired_tasks(
        self, *, now: float, limit: int, agents: Iterable[str] | None = None
    ) -> list[Task]:
        """Pending tasks (of ``agents``, if given) past their TTL or queue timeout at ``now``."""
        p = self._params()
        sql = f"SELECT record FROM tasks WHERE state = 'pending' AND expires_at <= {p.add(now)}"
        if agents is not None:
            sql += " AND " + p.one_of("agent", agents)
        sql += f" ORDER BY expires_at LIMIT {p.add(limit)}"
        return await self._records(sql, p.values)

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
        p = self._params()
        rows = await self._rows(
            finished_sql(p, after=after, upto=upto, with_parent=with_parent), p.values
        )
        return [(row[1], decode_task(row[2])) for row in rows], upto

    async def active_counts(self) -> dict[str, int]:
        """Tasks in ``starting``/``running`` per limit key (concurrency key, else agent)."""
        return {str(key): int(count) for key, count in await self._rows(ACTIVE_COUNTS)}
