"""The tools, in one table: name, what the model reads, argument schema, annotations and
the :class:`~tasktrail.mcp._bridge.Bridge` method that does the work.

``tools/list`` and the generated reference (``docs/gen_mcp_reference.py``) both come from
:func:`tool_definitions`, so what a client sees and what the docs say cannot drift.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from mcp.types import Tool, ToolAnnotations, ToolExecution
from pydantic import BaseModel

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
from tasktrail.mcp._bridge import Bridge, Outcome

__all__ = ["TOOLS", "TOOLS_BY_NAME", "ToolSpec", "tool_definitions"]

Handler = Callable[[Bridge, Any, str], Awaitable[Outcome]]


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its wire definition and the bridge method behind it."""

    name: str
    title: str
    description: str
    arguments: type[BaseModel]
    annotations: ToolAnnotations
    run: Handler
    task_support: Literal["forbidden", "optional"] = "forbidden"
    """``optional``: with the MCP Tasks extension, a call may answer with a task handle."""

    def definition(self, agents: Mapping[str, str] | None = None) -> Tool:
        """The ``tools/list`` entry; ``agents`` (name -> description) fills the agent enum."""
        schema = copy.deepcopy(self.arguments.model_json_schema())
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        agent = schema.get("properties", {}).get("agent")
        if agent is not None and agents:
            agent["enum"] = sorted(agents)
            described = "; ".join(
                f"{name}: {text}" if text else name for name, text in sorted(agents.items())
            )
            agent["description"] = f"{agent['description']} Here: {described}."
        return Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=schema,
            annotations=self.annotations,
            execution=ToolExecution(task_support=self.task_support)
            if self.task_support != "forbidden"
            else None,
        )


_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_LAUNCH = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


TOOLS: Final[tuple[ToolSpec, ...]] = (
    ToolSpec(
        name="launch_task",
        title="Launch a background task",
        description=(
            "Start a task in the background and return its id at once (state `pending`); a "
            "worker runs it. The task is durable: it survives restarts of this server and of "
            "your session, and every step is logged. Use it for long or parallel work (a "
            "sub-agent, a build, a test run), then follow it with task_output or task_status, "
            "block on it with wait_task, stop it with cancel_task. `agent` must be one of the "
            "agents this server allows."
        ),
        arguments=LaunchArgs,
        annotations=_LAUNCH,
        run=Bridge.launch_task,
    ),
    ToolSpec(
        name="run_task",
        title="Run a task and wait for its result",
        description=(
            "Launch a task and wait up to `wait` seconds for it to finish; return its final "
            "state, result or error, and the end of its output. A task still running when "
            "`wait` runs out keeps running: the answer carries its id to follow with "
            "task_output or wait_task. The result is an error when the task failed or was "
            "cancelled. Clients that support the MCP Tasks extension get a durable task handle "
            "at once instead, to poll with tasks/get."
        ),
        arguments=RunArgs,
        annotations=_LAUNCH,
        run=Bridge.run_task,
        task_support="optional",
    ),
    ToolSpec(
        name="task_status",
        title="Status of a task",
        description=(
            "The current state of a task (pending, starting, running, completed, failed, "
            "cancelled), its attempt, timings, worker, and its error or result once finished. "
            "Returns at once."
        ),
        arguments=TaskIdArgs,
        annotations=_READ,
        run=Bridge.task_status,
    ),
    ToolSpec(
        name="task_output",
        title="Read a task's output",
        description=(
            "Read a task's output (stdout and stderr, in the order written), one page at a "
            "time. Pass `since` = the `next` of your previous call to get only what is new. "
            "With `wait` > 0 the call waits up to that many seconds for new output or for the "
            "task to end, so you can follow a running task without polling fast. `more` says "
            "another page is already there, `finished` that the task has ended."
        ),
        arguments=OutputArgs,
        annotations=_READ,
        run=Bridge.task_output,
    ),
    ToolSpec(
        name="wait_task",
        title="Wait for a task to finish",
        description=(
            "Wait until a task has finished (completed, failed or cancelled) or `timeout` "
            "seconds have passed, and return its state. `finished: false` means it is still "
            "going: call again, or read its output. Keep `timeout` below your client's "
            "tool-call timeout."
        ),
        arguments=WaitArgs,
        annotations=_READ,
        run=Bridge.wait_task,
    ),
    ToolSpec(
        name="cancel_task",
        title="Cancel a task",
        description=(
            "Cancel a task and all its descendants. A pending task is cancelled at once; a "
            "running one is asked to stop (its process gets SIGTERM, then SIGKILL after a "
            "grace period), or cancelled at once with `force`. A finished task is left as it "
            "is. Give a `reason`: it is kept in the audit trail."
        ),
        arguments=CancelArgs,
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        run=Bridge.cancel_task,
    ),
    ToolSpec(
        name="list_tasks",
        title="List tasks",
        description=(
            "List tasks, newest first: all, or only those in one state, of one agent, or "
            "children of one task. Shows every task in the database, also those started from "
            "the command line or in other sessions."
        ),
        arguments=ListArgs,
        annotations=_READ,
        run=Bridge.list_tasks,
    ),
    ToolSpec(
        name="task_history",
        title="Audit trail of a task",
        description=(
            "Every event of a task (created, claimed, started, cancel requested, completed, "
            "failed, cancelled, re-queued ...) with its actor, reason and time: who launched "
            "or cancelled it, which worker ran each attempt, why it ended. Output events are "
            "counted, and listed with `include_output`."
        ),
        arguments=HistoryArgs,
        annotations=_READ,
        run=Bridge.task_history,
    ),
)

TOOLS_BY_NAME: Final[Mapping[str, ToolSpec]] = {spec.name: spec for spec in TOOLS}


def tool_definitions(agents: Mapping[str, str] | None = None) -> list[Tool]:
    """Every tool's ``tools/list`` entry, in table order."""
    return [spec.definition(agents) for spec in TOOLS]
