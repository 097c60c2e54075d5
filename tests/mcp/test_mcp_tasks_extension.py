"""The MCP Tasks extension (SEP-2663) answered from tasktrail's log: a declaring client
gets a task handle from run_task and polls it with tasks/get, across a server restart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp.client import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Request, RequestParams, Result
from mcp_clients import event_count, in_process, over_stdio, payload, until
from mcp_types.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, MISSING_REQUIRED_CLIENT_CAPABILITY
from pydantic import ConfigDict, Field

from mcp import ClientSession
from tasktrail.mcp import TASKS_EXTENSION


class TaskHandle(Result):
    """A ``CreateTaskResult``: ``resultType: "task"`` and the task's fields."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = Field(alias="resultType", default="task")
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(alias="statusMessage", default=None)
    created_at: str = Field(alias="createdAt")
    ttl_ms: int | None = Field(alias="ttlMs")
    poll_interval_ms: int | None = Field(alias="pollIntervalMs", default=None)


class DetailedTask(Result):
    """A ``tasks/get`` answer."""

    model_config = ConfigDict(extra="allow")
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(alias="statusMessage", default=None)
    result: dict[str, Any] | None = None


class Ack(Result):
    """The empty acknowledgement of tasks/cancel and tasks/update."""

    result_type: str | None = Field(alias="resultType", default=None)


class TaskParams(RequestParams):
    task_id: str = Field(alias="taskId")


class GetTask(Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskParams
    name_param = "taskId"


class CancelTask(Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskParams
    name_param = "taskId"


async def get(session: ClientSession, task_id: str) -> DetailedTask:
    return await session.send_request(GetTask(params=TaskParams(taskId=task_id)), DetailedTask)


async def finished(session: ClientSession, task_id: str) -> DetailedTask:
    """Poll tasks/get until the task is no longer working."""

    async def done() -> DetailedTask | None:
        task = await get(session, task_id)
        return task if task.status != "working" else None

    return await until(done, f"task {task_id} to finish")


class Tasks(ClientExtension):
    """The client half: claims the task handle and resolves it by polling tasks/get, so
    call_tool returns the final result (as a 2025-era client layer may do)."""

    identifier = TASKS_EXTENSION

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self._resolve)]

    async def _resolve(self, handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        task = await finished(ctx.session, handle.task_id)
        assert task.result is not None
        return CallToolResult.model_validate(task.result)


async def test_run_task_answers_a_declaring_client_with_a_durable_handle(
    db_path: Path, config_path: Path
) -> None:
    """run_task returns a task handle at once; tasks/get shows it working, then completed
    with what run_task would have answered."""
    async with in_process(db_path, config_path, mode="auto", extensions=[Tasks()]) as client:
        assert client.protocol_version == "2026-07-28"
        assert TASKS_EXTENSION in (client.server_capabilities.extensions or {})
        handle = await client.session.call_tool(
            "run_task", {"agent": "echo", "prompt": "hi"}, allow_claimed=True
        )
        assert isinstance(handle, TaskHandle)
        assert handle.status == "working"
        assert handle.ttl_ms is None
        listed = payload(await client.call_tool("list_tasks", {}))["tasks"]
        task = await finished(client.session, handle.task_id)
    assert [t["task_id"] for t in listed] == [handle.task_id]
    assert task.status == "completed"
    assert task.result is not None
    assert task.result["isError"] is False
    assert task.result["structuredContent"]["output"] == "echo says: hi\n"


async def test_a_resolving_client_receives_the_final_result(
    db_path: Path, config_path: Path
) -> None:
    """With the extension resolving handles, call_tool returns the task's final result."""
    async with in_process(db_path, config_path, mode="auto", extensions=[Tasks()]) as client:
        result = await client.call_tool("run_task", {"agent": "echo", "prompt": "resolved"})
    assert payload(result)["output"] == "echo says: resolved\n"


async def test_a_failed_task_completes_the_handle_with_an_error_result(
    db_path: Path, config_path: Path
) -> None:
    """A task that fails ends its handle as completed with isError (the extension keeps
    `failed` for JSON-RPC errors)."""
    async with in_process(db_path, config_path, mode="auto", extensions=[Tasks()]) as client:
        handle = await client.session.call_tool(
            "run_task", {"agent": "shell", "prompt": "echo oops >&2; exit 3"}, allow_claimed=True
        )
        assert isinstance(handle, TaskHandle)
        task = await finished(client.session, handle.task_id)
    assert task.status == "completed"
    assert task.status_message is not None and task.status_message.startswith("failed: ")
    assert task.result is not None and task.result["isError"] is True
    assert task.result["structuredContent"]["exit_code"] == 3


async def test_tasks_cancel_cancels_the_task(db_path: Path, config_path: Path) -> None:
    """tasks/cancel is acknowledged and the task ends cancelled."""
    async with in_process(db_path, config_path, mode="auto", extensions=[Tasks()]) as client:
        handle = await client.session.call_tool(
            "run_task", {"agent": "shell", "prompt": "sleep 120"}, allow_claimed=True
        )
        assert isinstance(handle, TaskHandle)
        ack = await client.session.send_request(
            CancelTask(params=TaskParams(taskId=handle.task_id)), Ack
        )
        task = await finished(client.session, handle.task_id)
        history = payload(await client.call_tool("task_history", {"task_id": handle.task_id}))
    assert ack.result_type == "complete"
    assert task.status == "cancelled"
    requested = next(e for e in history["events"] if e["event"] == "task.cancel_requested")
    assert requested["actor"] == "mcp:pytest"
    assert requested["reason"] == "tasks/cancel of the MCP Tasks extension"


@pytest.mark.parametrize(
    ("extensions", "code"),
    [
        pytest.param([Tasks()], INVALID_PARAMS, id="unknown-task"),
        pytest.param(None, MISSING_REQUIRED_CLIENT_CAPABILITY, id="not-declared"),
    ],
)
async def test_tasks_get_refuses_with_the_extensions_error_codes(
    db_path: Path, config_path: Path, extensions: list[Any] | None, code: int
) -> None:
    """tasks/get of an unknown id is invalid params; from a client that did not declare
    the extension, missing capability."""
    async with in_process(db_path, config_path, mode="auto", extensions=extensions) as client:
        with pytest.raises(MCPError) as raised:
            await get(client.session, "no-such-task")
    assert raised.value.code == code


async def test_a_client_without_the_extension_gets_a_plain_result(
    db_path: Path, config_path: Path
) -> None:
    """Without the extension (declared on a 2026-07-28 request) run_task waits and
    answers normally; on the handshake era tasks/get does not exist."""
    async with in_process(db_path, config_path, mode="auto") as client:
        modern = await client.call_tool("run_task", {"agent": "echo", "prompt": "plain"})
    async with in_process(db_path, config_path, mode="legacy", extensions=[Tasks()]) as client:
        legacy = await client.call_tool("run_task", {"agent": "echo", "prompt": "old"})
        with pytest.raises(MCPError) as raised:
            await get(client.session, "any")
    assert payload(modern)["output"] == "echo says: plain\n"
    assert payload(legacy)["output"] == "echo says: old\n"
    assert raised.value.code == METHOD_NOT_FOUND


async def test_a_bad_run_task_call_gets_an_error_result_and_no_handle(
    db_path: Path, config_path: Path
) -> None:
    """A declaring client's invalid run_task call is a tool error; nothing is written."""
    async with in_process(db_path, config_path, mode="auto", extensions=[Tasks()]) as client:
        result = await client.session.call_tool(
            "run_task", {"agent": "nope", "prompt": "x"}, allow_claimed=True
        )
    assert isinstance(result, CallToolResult)
    assert result.is_error
    assert event_count(db_path) == 0


async def test_a_handle_is_answered_by_the_next_server_process(
    db_path: Path, config_path: Path, tmp_path: Path
) -> None:
    """A handle from one `tasktrail mcp` process is answered, from the log, by the next."""
    log = tmp_path / "server.log"
    modern = {"modern": True, "extensions": {TASKS_EXTENSION: {}}}
    claims = {TASKS_EXTENSION: [ResultClaim(result_type="task", model=TaskHandle, resolve=_unused)]}
    async with over_stdio(db_path, config_path, log, result_claims=claims, **modern) as client:
        handle = await client.call_tool(
            "run_task", {"agent": "echo", "prompt": "durable"}, allow_claimed=True
        )
        assert isinstance(handle, TaskHandle)
        first = await finished(client, handle.task_id)
    async with over_stdio(db_path, config_path, log, **modern) as client:
        second = await get(client, handle.task_id)
    assert first.status == second.status == "completed"
    assert second.result == first.result
    assert second.result is not None
    assert second.result["structuredContent"]["output"] == "echo says: durable\n"


async def _unused(handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
    raise AssertionError("handles are taken with allow_claimed=True")
