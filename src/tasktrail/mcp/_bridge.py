"""What each tool does, over an :class:`~tasktrail.AsyncClient` (a ``TaskManager`` with
its worker, or a launch-only client): plain async methods that take validated arguments
and the caller's actor, and return JSON-ready records.

Errors are tasktrail errors (one line each); the server turns them into tool errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from tasktrail.cli._format import event_summary
from tasktrail.errors import InvalidInputError, TaskNotFoundError, WaitTimeoutError
from tasktrail.events import OutputAppended, RecordedEvent
from tasktrail.lifecycle import ACTIVE_STATES, TERMINAL_STATES, TaskState
from tasktrail.mcp._args import (
    CancelArgs,
    HistoryArgs,
    LaunchArgs,
    ListArgs,
    OutputArgs,
    RunArgs,
    TaskIdArgs,
    WaitArgs,
)
from tasktrail.projection import Task
from tasktrail.runtime.client import AsyncClient

__all__ = ["Bridge", "Outcome", "actor_for"]

_OUTPUT_TAIL: Final = 20_000
"""Characters of output run_task returns (the end of it)."""
_RESULT_CHARS: Final = 4_000
"""Characters of a task's result (as JSON) a record shows before it is cut short."""
_PREVIEW: Final = 100
_UNFINISHED: Final = (TaskState.PENDING, *ACTIVE_STATES)


def actor_for(client_name: str | None) -> str:
    """The actor of a write made for an MCP client: ``mcp:<its name>`` (``mcp:unknown``)."""
    name = "".join(ch for ch in client_name or "" if ch.isprintable()).strip()[:64]
    return f"mcp:{name or 'unknown'}"


@dataclass(frozen=True)
class Outcome:
    """What a tool returns: a JSON-ready record, and whether it reports a failure."""

    record: dict[str, Any]
    is_error: bool = False


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _bounded(value: Any, limit: int = _RESULT_CHARS) -> Any:
    """``value`` itself when its JSON is short, else the start of its JSON, marked."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return value
    return f"{text[:limit]}... ({len(text)} characters in all; cut short here)"


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return round(((end or datetime.now(UTC)) - start).total_seconds(), 3)


def task_record(task: Task) -> dict[str, Any]:
    """Everything a model needs to know about a task, without its output."""
    record: dict[str, Any] = {
        "task_id": task.id,
        "state": task.state.value,
        "agent": task.agent,
        "description": task.description,
        "prompt": task.prompt[:500] + ("..." if len(task.prompt) > 500 else ""),
        "parent_id": task.parent_id,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "worker_id": task.worker_id,
        "session_id": task.session_id,
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
        "queued_seconds": _seconds(task.created_at, task.started_at or task.finished_at),
        "run_seconds": _seconds(task.started_at, task.finished_at),
    }
    if task.cancel_requested and not task.is_terminal:
        record["cancel_requested"] = True
    if task.state is TaskState.COMPLETED:
        record["result"] = _bounded(task.result)
    if task.error is not None:
        record["error"] = task.error
    if task.exit_code is not None:
        record["exit_code"] = task.exit_code
    if task.reason is not None:
        record["reason"] = task.reason
    if task.run_timeout is not None:
        record["timeout"] = task.run_timeout
    return {key: value for key, value in record.items() if value not in (None, "")}


def _row(task: Task) -> dict[str, Any]:
    """A task as one row of a listing."""
    row: dict[str, Any] = {
        "task_id": task.id,
        "state": task.state.value,
        "agent": task.agent,
        "description": task.description or task.prompt[:_PREVIEW],
        "created_at": _iso(task.created_at),
        "finished_at": _iso(task.finished_at),
    }
    if task.parent_id is not None:
        row["parent_id"] = task.parent_id
    if task.error is not None:
        row["error"] = task.error[:200]
    return {key: value for key, value in row.items() if value is not None}


def _event_row(event: RecordedEvent) -> dict[str, Any]:
    row = {
        "version": event.version,
        "time": _iso(event.recorded_at),
        "event": event.type,
        "actor": event.actor,
        "reason": event.reason,
        "detail": event_summary(event),
    }
    return {key: value for key, value in row.items() if value not in (None, "")}


def _output_of(events: list[RecordedEvent]) -> str:
    return "".join(e.payload.text for e in events if isinstance(e.payload, OutputAppended))


@dataclass
class Bridge:
    """The tools' behaviour over one open client.

    Args:
        manager: the open client: a TaskManager whose worker runs the tasks, or a
            launch-only AsyncClient (separate workers run them).
        agents: the agents a tool call may launch, with a description each.
        output_poll: seconds between checks for output written by other processes.
    """

    manager: AsyncClient
    agents: Mapping[str, str] = field(default_factory=dict)
    output_poll: float = 0.25

    # -- writes ---------------------------------------------------------------------------

    async def launch(self, args: LaunchArgs, actor: str) -> Task:
        """Check and launch a task for ``actor``; nothing is written when a check fails."""
        if args.agent not in self.agents:
            known = ", ".join(sorted(self.agents)) or "none"
            fix = (
                "define agents in tasktrail.toml, or start the server with --allow-agent shell"
                if not self.agents
                else "use one of those"
            )
            raise InvalidInputError(
                f"agent {args.agent!r} is not launchable here (launchable: {known}); {fix}"
            )
        if args.parent_id is not None and await self.manager.get_task(args.parent_id) is None:
            raise TaskNotFoundError(args.parent_id)
        # No timeout given: the client's default (the config's worker.run_timeout) applies.
        deadline: dict[str, Any] = {} if args.timeout is None else {"run_timeout": args.timeout}
        return await self.manager.launch(
            args.agent,
            args.prompt,
            description=args.description,
            parent_id=args.parent_id,
            priority=args.priority,
            actor=actor,
            **deadline,
        )

    async def launch_task(self, args: LaunchArgs, actor: str) -> Outcome:
        task = await self.launch(args, actor)
        return Outcome(
            {
                "task_id": task.id,
                "state": task.state.value,
                "agent": task.agent,
                "description": task.description,
                "created_at": _iso(task.created_at),
                "next": "follow it with task_output or wait_task; stop it with cancel_task",
            }
        )

    async def run_task(self, args: RunArgs, actor: str) -> Outcome:
        task = await self.launch(args, actor)
        try:
            task = await self.manager.wait(task.id, timeout=args.wait)
        except WaitTimeoutError:
            task = await self._require(task.id)
        return await self.run_outcome(task)

    async def run_outcome(self, task: Task) -> Outcome:
        """What run_task answers for ``task``: its record and the end of its output; an
        error result when it failed or was cancelled."""
        output = await self._output(task.id)
        record = task_record(task)
        record["finished"] = task.is_terminal
        record["output"] = output[-_OUTPUT_TAIL:]
        record["output_chars"] = len(output)
        if len(output) > _OUTPUT_TAIL:
            record["output_truncated"] = (
                f"only the last {_OUTPUT_TAIL} characters; task_output pages through all"
            )
        if not task.is_terminal:
            record["next"] = (
                f"still {task.state.value}: follow it with task_output(since={len(output)}) "
                "or wait_task"
            )
        failed = task.state in (TaskState.FAILED, TaskState.CANCELLED)
        return Outcome(record, is_error=failed)

    async def cancel_task(self, args: CancelArgs, actor: str) -> Outcome:
        before = await self._require(args.task_id)
        task = await self.manager.cancel(
            args.task_id, force=args.force, actor=actor, reason=args.reason or None
        )
        if before.is_terminal:
            note = f"already {before.state.value}; left as it is"
        elif task.state is TaskState.CANCELLED:
            note = "cancelled (its descendants too)"
        else:
            note = (
                "cancel requested: its worker stops the process (SIGTERM, then SIGKILL after "
                "the grace period) and records cancelled; wait_task shows the end"
            )
        record: dict[str, Any] = {"task_id": task.id, "state": task.state.value, "note": note}
        if task.cancel_requested and not task.is_terminal:
            record["cancel_requested"] = True
        return Outcome(record)

    # -- reads ----------------------------------------------------------------------------

    async def _require(self, task_id: str) -> Task:
        task = await self.manager.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def _output(self, task_id: str) -> str:
        return _output_of(await self.manager.history(task_id))

    async def task_status(self, args: TaskIdArgs, actor: str) -> Outcome:
        task = await self._require(args.task_id)
        record = task_record(task)
        record["output_chars"] = len(await self._output(task.id))
        return Outcome(record)

    async def task_output(self, args: OutputArgs, actor: str) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.wait
        while True:
            task = await self._require(args.task_id)  # first: finished means all output is in
            output = await self._output(task.id)
            if args.since > len(output):
                raise InvalidInputError(
                    f"since {args.since} is past the end of the output ({len(output)} "
                    "characters so far); pass the `next` of your last call"
                )
            left = deadline - loop.time()
            if len(output) > args.since or task.is_terminal or left <= 0:
                break
            await self.manager.store.wait_for_commit(min(left, self.output_poll))
        page = output[args.since : args.since + args.max_chars]
        end = args.since + len(page)
        return Outcome(
            {
                "task_id": task.id,
                "state": task.state.value,
                "text": page,
                "since": args.since,
                "next": end,
                "total_chars": len(output),
                "more": end < len(output),
                "finished": task.is_terminal,
            }
        )

    async def wait_task(self, args: WaitArgs, actor: str) -> Outcome:
        try:
            task = await self.manager.wait(args.task_id, timeout=args.timeout)
        except WaitTimeoutError:
            task = await self._require(args.task_id)
        record = task_record(task)
        record["finished"] = task.is_terminal
        record["output_chars"] = len(await self._output(task.id))
        return Outcome(record)

    async def list_tasks(self, args: ListArgs, actor: str) -> Outcome:
        states: Collection[TaskState] | str | None = args.state
        if args.state == "unfinished":
            states = _UNFINISHED
        elif args.state == "finished":
            states = TERMINAL_STATES
        tasks = await self.manager.store.list_tasks(
            state=states,
            agent=args.agent,
            parent_id=args.parent_id,
            limit=args.limit,
            newest_first=True,
        )
        return Outcome({"tasks": [_row(t) for t in tasks], "count": len(tasks)})

    async def task_history(self, args: HistoryArgs, actor: str) -> Outcome:
        task = await self._require(args.task_id)
        events = await self.manager.history(task.id)
        output = [e for e in events if isinstance(e.payload, OutputAppended)]
        shown = [
            e for e in events if args.include_output or not isinstance(e.payload, OutputAppended)
        ]
        return Outcome(
            {
                "task_id": task.id,
                "state": task.state.value,
                "events": [_event_row(e) for e in shown],
                "output_events": len(output),
                "output_chars": len(_output_of(output)),
            }
        )
