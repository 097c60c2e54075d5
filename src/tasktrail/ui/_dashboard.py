"""What a dashboard holds open (store, queries, live hub, actions) and what each page reads.

Every page is read from the store's API and the dashboard's few queries; nothing is
cached between requests, so a page always shows the log as it is. Each page also carries
the log's head as it was before its reads, from where its live updates continue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final, Self

from tasktrail.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    TamperedLogError,
    TaskNotFoundError,
    TasktrailError,
)
from tasktrail.ids import check_task_id
from tasktrail.lifecycle import ACTIVE_STATES, TaskState
from tasktrail.projection import Task, fold_all
from tasktrail.runtime._recovery import Identity, Leases
from tasktrail.runtime.client import AsyncClient
from tasktrail.store import EventStore, open_store
from tasktrail.store._validate import redact_url
from tasktrail.ui._actions import ACTOR, Actions, new_token
from tasktrail.ui._live import Hub
from tasktrail.ui._queries import Cursor, Reader, TaskFilter, open_reader
from tasktrail.ui._timeline import timeline
from tasktrail.ui._views import (
    changed_fields,
    clock,
    duration,
    event_row,
    minute_chart,
    output_of,
    task_fields,
    task_header,
    task_row,
    value_text,
    worker_row,
)

__all__ = ["Dashboard", "Settings"]

MAX_OUTPUT: Final = 256 * 1024
"""Characters of output a task page shows (the last ones; all of it is one link away)."""
MAX_EVENT_ROWS: Final = 1000
"""Rows of a task's event table: the first 200 and the last 800 of a longer history."""
MAX_CHILDREN: Final = 50


@dataclass(frozen=True)
class Settings:
    """How a dashboard runs."""

    database: str
    """A SQLite file path or a ``postgresql://`` URL."""
    allow_actions: bool = False
    token: str | None = None
    """The actions' token (a fresh one when actions are on and none is given)."""
    poll_interval: float = 0.25
    """Seconds between looks at the log for other processes' commits to a SQLite file."""
    page_size: int = 50


def tail(chunks: list[tuple[str, str]], limit: int) -> tuple[list[tuple[str, str]], int]:
    """The last ``limit`` characters of output chunks, and how many were left out."""
    total = sum(len(text) for _, text in chunks)
    drop = max(0, total - limit)
    left = drop
    kept: list[tuple[str, str]] = []
    for channel, text in chunks:
        if left >= len(text):
            left -= len(text)
            continue
        kept.append((channel, text[left:]))
        left = 0
    return kept, drop


class Dashboard:
    """The open resources of one dashboard: ``async with Dashboard(settings) as dash:``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.label = redact_url(settings.database)
        self.store: EventStore = open_store(settings.database)
        self.reader: Reader = open_reader(settings.database)
        self.hub = Hub(self.store, self.reader, poll_interval=settings.poll_interval)
        self.actions = Actions(None, None)
        self._following: asyncio.Task[None] | None = None
        self._leases = Leases()
        """What this dashboard saw of each worker's heartbeat (by its monotonic clock)."""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.store)  # creates or migrates the schema
            await self.reader.open()
            stack.push_async_callback(self.reader.close)
            if self.settings.allow_actions:
                # Runs no task and enforces no deadline: it only records the actions.
                client = AsyncClient(self.settings.database, actor=ACTOR, poll_interval=5.0)
                await stack.enter_async_context(client)
                self.actions = Actions(client, self.settings.token or new_token())
            await self.hub.start()
            self._following = asyncio.create_task(self.hub.run(), name="tasktrail-ui-hub")
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop following the log and close everything (twice is harmless)."""
        self.hub.close()
        following, self._following = self._following, None
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()

    # -- pages ---------------------------------------------------------------------------------

    async def task_list(
        self, where: TaskFilter, *, before: Cursor | None, after: Cursor | None
    ) -> dict[str, Any]:
        """The task list: a page of tasks, the counts per state, the agents."""
        head = await self.store.head()
        page = await self.reader.page(
            where, before=before, after=after, limit=self.settings.page_size
        )
        counts = await self.reader.state_counts()
        agents = sorted(await self.reader.agent_counts())
        return {
            "head": head,
            "rows": [task_row(task) for task in page.tasks],
            "newer": page.newer.encode() if page.newer else None,
            "older": page.older.encode() if page.older else None,
            "first_page": before is None and after is None,
            "counts": counts,
            "total": sum(counts.values()),
            "agents": agents,
        }

    async def _task(self, task_id: str) -> Task:
        try:
            check_task_id(task_id)
        except InvalidInputError:
            raise TaskNotFoundError(task_id[:80]) from None
        task = await self.store.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def task_page(self, task_id: str) -> dict[str, Any]:
        """Everything a task's page shows."""
        head = await self.store.head()
        task = await self._task(task_id)
        events = await self.store.history(task_id)
        task = await self._task(task_id)  # as of its last event read (or later)
        now = time.time()
        line = timeline(events)
        children = await self.store.list_tasks(parent_id=task_id, limit=MAX_CHILDREN + 1)
        reruns = await self.store.list_tasks(rerun_of=task_id, limit=MAX_CHILDREN)
        rows = [event_row(event) for event in events]
        hidden = 0
        if len(rows) > MAX_EVENT_ROWS:
            hidden = len(rows) - MAX_EVENT_ROWS
            rows = rows[:200] + rows[200 + hidden :]
        output, clipped = tail(output_of(events), MAX_OUTPUT)
        before = fold_all(events[:-1]) if len(events) > 1 else None
        return {
            "head": head,
            "task": task,
            "header": task_header(task, line, now),
            "prompt": task.prompt,
            "description": task.description,
            "metadata": task.metadata,
            "fields": task_fields(task),
            "timeline": {**line.as_json(), "now": now},
            "events": rows,
            "hidden_events": hidden,
            "output": output,
            "clipped_output": clipped,
            "replay_changed": changed_fields(before, fold_all(events) or task),
            "children": [task_row(child) for child in children[:MAX_CHILDREN]],
            "more_children": len(children) > MAX_CHILDREN,
            "reruns": [task_row(rerun) for rerun in reruns],
            "input": None if task.input is None else value_text(task.input),
            "last_version": task.version,
        }

    async def output_text(self, task_id: str) -> str:
        """A task's whole output (stdout and stderr as written)."""
        await self._task(task_id)
        return "".join(text for _, text in output_of(await self.store.history(task_id)))

    async def replay(self, task_id: str, version: int) -> dict[str, Any]:
        """The task as it was after ``version``, the event that made it, and what changed."""
        task = await self._task(task_id)
        if not 1 <= version <= task.version:
            raise InvalidInputError(f"version must be between 1 and {task.version}")
        after = await self.store.state_at(task_id, version=version)
        before = await self.store.state_at(task_id, version=version - 1) if version > 1 else None
        (event,) = await self.store.read_stream(
            task_id, after_version=version - 1, to_version=version
        )
        assert after is not None
        return {
            "version": version,
            "last_version": task.version,
            "state": after.state.value,
            "event": event_row(event),
            "fields": task_fields(after),
            "changed": changed_fields(before, after),
        }

    async def verify(self) -> dict[str, Any]:
        """Recompute the hash chain (and compare the projection with the log)."""
        head = await self.store.head()
        started = time.perf_counter()
        result: dict[str, Any] = {"head": head}
        try:
            report = await self.store.verify()
        except TamperedLogError as err:
            located = await self.reader.locate(err.sequence)
            result.update(
                ok=False,
                sequence=err.sequence,
                detail=err.detail,
                task_id=located[0] if located else None,
                version=located[1] if located else None,
                message=str(err),
            )
        except CorruptDatabaseError as err:
            result.update(ok=False, sequence=getattr(err, "sequence", None), detail=str(err),
                          task_id=None, version=None, message=str(err))  # fmt: skip
        else:
            result.update(
                ok=True,
                events=report.events,
                head_sequence=report.head_sequence,
                head_hash=report.head_hash,
                append_only=report.append_only,
            )
            try:
                stale = await self.store.check_projection()
            except TasktrailError as err:
                result.update(projection_error=str(err))
            else:
                result.update(stale=stale[:20], stale_count=len(stale))
        result["seconds"] = round(time.perf_counter() - started, 3)
        result["took"] = duration(result["seconds"])
        return result

    async def stats(self) -> dict[str, Any]:
        """Workers with their heartbeats, tasks per state and agent, recent finishes."""
        now = time.time()
        this_minute = int(now // 60) * 60
        since = this_minute - 59 * 60
        head = await self.store.head()
        counts = await self.reader.state_counts()
        agents = await self.reader.agent_counts()
        workers = await self.store.list_workers()
        active = await self.store.list_tasks(state=ACTIVE_STATES)
        running = Counter(task.worker_id for task in active)
        per_minute = minute_chart(await self.reader.finished_per_minute(since))
        here, watched = Identity.here(), time.monotonic()
        rows = [
            worker_row(
                worker, now, running.get(worker.worker_id, 0),
                silent_for=self._leases.silent_for(worker, watched), here=here,
            )
            for worker in workers
        ]  # fmt: skip
        rows.sort(key=lambda row: (row["status"] != "alive", -row["heartbeat_ts"]))
        return {
            "head": head,
            "now": clock(now),
            "counts": counts,
            "total": sum(counts.values()),
            "agents": agents,
            "states": [state.value for state in TaskState],
            "workers": rows,
            "alive": sum(1 for row in rows if row["status"] == "alive"),
            "per_minute": per_minute,
            "chart_start": clock(since, with_date=False)[:5],
            "finished_last_hour": sum(sum(m.values()) for m in per_minute),
        }
