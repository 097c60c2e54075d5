"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663), kept in the log.

A client that declares the extension on a 2026-07-28 request and calls a tool whose
``execution.taskSupport`` is ``optional`` (``run_task``) receives at once a task handle
(``resultType: "task"``) instead of waiting: the handle's ``taskId`` is the tasktrail
task's id. ``tasks/get``, ``tasks/update`` and ``tasks/cancel`` are answered from the log,
so a handle stays valid across restarts of the client and of this server, which is what
the SDK's own examples, keeping tasks in memory, cannot do.

Status mapping: ``pending``/``starting``/``running`` are ``working``; ``completed`` and
``failed`` are ``completed`` with ``result`` = what ``run_task`` would have answered
(``isError: true`` for a failed task: the extension keeps its ``failed`` for JSON-RPC
errors, which a tasktrail task never is); ``cancelled`` is ``cancelled``. No task ever
needs input, so ``tasks/update`` has nothing to deliver and is only acknowledged.

Built on the SDK's extension interface (SEP-2133, ``mcp.server.extension.Extension``):
the extension declares its three methods and its ``tools/call`` interceptor, and
:func:`tasktrail.mcp._server.build_server` applies them to the low-level server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from mcp.server import ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, RequestParams
from mcp_types.jsonrpc import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field, ValidationError

from tasktrail.errors import TasktrailError
from tasktrail.ids import MAX_TASK_ID_LENGTH
from tasktrail.lifecycle import TaskState
from tasktrail.mcp._args import LaunchArgs
from tasktrail.mcp._bridge import Bridge
from tasktrail.mcp._tools import TOOLS_BY_NAME
from tasktrail.mcp._wire import caller, error_result, outcome_result
from tasktrail.projection import Task

__all__ = ["TASKS_EXTENSION", "DurableTasks", "GetTaskParams", "UpdateTaskParams"]

logger = logging.getLogger("tasktrail.mcp")

TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
_MODERN: Final = frozenset(MODERN_PROTOCOL_VERSIONS)


class GetTaskParams(RequestParams):
    """The params of ``tasks/get`` and ``tasks/cancel``."""

    task_id: str = Field(alias="taskId", min_length=1, max_length=MAX_TASK_ID_LENGTH)


class UpdateTaskParams(GetTaskParams):
    """The params of ``tasks/update``."""

    input_responses: dict[str, Any] = Field(alias="inputResponses", default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status(task: Task) -> tuple[str, str]:
    """The extension's status of a tasktrail task, and a message a model can read."""
    match task.state:
        case TaskState.PENDING:
            return "working", "pending: waiting for a worker"
        case TaskState.STARTING | TaskState.RUNNING:
            where = f" on {task.worker_id}" if task.worker_id else ""
            return "working", f"{task.state.value}: attempt {task.attempt}{where}"
        case TaskState.COMPLETED:
            return "completed", "completed"
        case TaskState.FAILED:
            return "completed", f"failed: {task.error or task.reason or 'no reason given'}"
        case _:
            return "cancelled", f"cancelled: {task.reason or 'by request'}"


class DurableTasks(Extension):
    """SEP-2663 tasks, backed by tasktrail's log instead of memory.

    Args:
        bridge: the tools' bridge (launches and reads tasks).
        poll_interval_ms: the ``pollIntervalMs`` hint handed to clients.
    """

    identifier = TASKS_EXTENSION

    def __init__(self, bridge: Bridge, *, poll_interval_ms: int = 1000) -> None:
        self.bridge = bridge
        self.poll_interval_ms = poll_interval_ms

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding("tasks/get", GetTaskParams, self._get, protocol_versions=_MODERN),
            MethodBinding(
                "tasks/update", UpdateTaskParams, self._update, protocol_versions=_MODERN
            ),
            MethodBinding("tasks/cancel", GetTaskParams, self._cancel, protocol_versions=_MODERN),
        ]

    # -- task creation ----------------------------------------------------------------------

    @staticmethod
    def declared(ctx: ServerRequestContext[Any, Any]) -> bool:
        """Whether this request may be answered with a task handle: a 2026-07-28 request
        whose client capabilities name the extension."""
        if ctx.protocol_version not in _MODERN:
            return False
        capabilities = ctx.session.client_capabilities
        return bool(
            capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions
        )

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        spec = TOOLS_BY_NAME.get(params.name)
        if spec is None or spec.task_support == "forbidden" or not self.declared(ctx):
            return await call_next(ctx)
        try:
            args = spec.arguments.model_validate(params.arguments or {})
        except ValidationError:
            return await call_next(ctx)  # the tool answers with its one-line error
        assert isinstance(args, LaunchArgs)  # every task-capable tool launches a task
        try:
            task = await self.bridge.launch(args, caller(ctx))
        except TasktrailError as err:
            return error_result(str(err))
        # The append has committed: tasks/get for this id resolves from here on.
        return {"resultType": "task", **self.shape(task)}

    def shape(self, task: Task) -> dict[str, Any]:
        """The extension's ``Task`` fields for a tasktrail task."""
        status, message = _status(task)
        return {
            "taskId": task.id,
            "status": status,
            "statusMessage": message,
            "createdAt": _iso(task.created_at),
            "lastUpdatedAt": _iso(task.updated_at),
            "ttlMs": None,
            "pollIntervalMs": self.poll_interval_ms,
        }

    # -- the extension's methods -------------------------------------------------------------

    async def _task(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> Task:
        require_client_extension(ctx, TASKS_EXTENSION)
        task = await self.bridge.manager.get_task(task_id)
        if task is None:
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")
        return task

    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskParams
    ) -> HandlerResult:
        task = await self._task(ctx, params.task_id)
        answer = {"resultType": "complete", **self.shape(task)}
        if task.state in (TaskState.COMPLETED, TaskState.FAILED):
            result = outcome_result(await self.bridge.run_outcome(task))
            answer["result"] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return answer

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        await self._task(ctx, params.task_id)  # no task asks for input: nothing outstanding
        return {}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: GetTaskParams
    ) -> HandlerResult:
        task = await self._task(ctx, params.task_id)
        if not task.is_terminal:
            await self.bridge.manager.cancel(
                task.id, actor=caller(ctx), reason="tasks/cancel of the MCP Tasks extension"
            )
        return {}
