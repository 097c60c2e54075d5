"""The MCP server: ``tools/list`` and ``tools/call`` over the tool table, and the Tasks
extension, on the SDK's low-level :class:`mcp.server.Server`.

Why the low-level server rather than ``MCPServer``: every bad argument must come back as
a one-line tool error a model can act on (``MCPServer`` hands the model pydantic's
multi-line validation report), and the tool table must be the one source of the wire
definitions and of the generated reference. The extension is applied the way
``MCPServer(extensions=...)`` applies one: its methods registered (gated to their
protocol versions), its identifier advertised, its interceptor folded around
``tools/call`` with the SDK's own :func:`~mcp.server.extension.compose_tool_call_handler`.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from typing import Any, Final

from mcp.server import Server, ServerRequestContext
from mcp.server.context import HandlerResult
from mcp.server.extension import Extension, MethodBinding, compose_tool_call_handler
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams
from mcp_types.jsonrpc import METHOD_NOT_FOUND
from pydantic import ValidationError

from tasktrail.errors import TasktrailError
from tasktrail.mcp._args import describe_error
from tasktrail.mcp._bridge import Bridge
from tasktrail.mcp._tasks import DurableTasks
from tasktrail.mcp._tools import TOOLS_BY_NAME, tool_definitions
from tasktrail.mcp._wire import caller, error_result, outcome_result

__all__ = ["INSTRUCTIONS", "SERVER_NAME", "build_server"]

logger = logging.getLogger("tasktrail.mcp")

SERVER_NAME: Final = "tasktrail"
INSTRUCTIONS: Final = (
    "tasktrail runs long work in the background, durably: tasks survive restarts of this "
    "server and of your session, and every step is in an audit log. Start work with "
    "launch_task (returns the id at once) or run_task (waits a while for the result). "
    "Follow a task with task_output (pass since = the previous `next`, and wait = a few "
    "seconds), check it with task_status, block on it with wait_task, stop it with "
    "cancel_task (give a reason). list_tasks shows every task, task_history who did what. "
    "Keep the ids: a task can be followed from any later session."
)


def _version() -> str:
    try:
        return importlib.metadata.version("tasktrail")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0"


def _gated(method: MethodBinding) -> Any:
    """``method.handler``, refusing (method not found) at protocol versions it lacks."""
    versions = method.protocol_versions
    if versions is None:
        return method.handler

    async def gated(ctx: ServerRequestContext[Any, Any], params: Any) -> HandlerResult:
        if ctx.protocol_version not in versions:
            raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=method.method)
        return await method.handler(ctx, params)

    return gated


def build_server(bridge: Bridge, *, extensions: Sequence[Extension] | None = None) -> Server[Any]:
    """The MCP server for ``bridge``'s manager; ``extensions`` default to the Tasks one."""
    definitions = tool_definitions(bridge.agents)
    schemas = {tool.name: tool.input_schema for tool in definitions}

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=definitions)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> CallToolResult:
        spec = TOOLS_BY_NAME.get(params.name)
        if spec is None:
            return error_result(
                f"unknown tool {params.name!r}; the tools are: {', '.join(schemas)}"
            )
        try:
            args = spec.arguments.model_validate(params.arguments or {})
        except ValidationError as err:
            return error_result(describe_error(err))
        try:
            outcome = await spec.run(bridge, args, caller(ctx))
        except TasktrailError as err:
            return error_result(str(err))
        except Exception:
            logger.exception("tool %s failed unexpectedly", params.name)
            return error_result(
                f"{params.name} failed unexpectedly inside tasktrail (the details are in the "
                "server's log on stderr); the task's state is in its history"
            )
        return outcome_result(outcome)

    server: Server[Any] = Server(
        SERVER_NAME,
        version=_version(),
        title="tasktrail: durable background tasks",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=schemas.get,
    )
    applied = list(extensions) if extensions is not None else [DurableTasks(bridge)]
    for extension in applied:
        for method in extension.methods():
            if server.get_request_handler(method.method) is not None:
                raise ValueError(f"method {method.method!r} is bound twice")
            server.add_request_handler(method.method, method.params_type, _gated(method))
        server.extensions[extension.identifier] = extension.settings()
    if applied:
        server.add_request_handler(
            "tools/call", CallToolRequestParams, compose_tool_call_handler(applied, call_tool)
        )
    return server
