"""Bad arguments come back as tool errors (``isError: true``) with a one-line reason the
model can act on: never a crash, never a traceback, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp_clients import event_count, in_process, payload, tool_error

from tasktrail.mcp._args import MAX_PROMPT_CHARS

BAD_CALLS = [
    pytest.param(
        "launch_task", {"agent": "rm", "prompt": "-rf /"},
        "agent 'rm' is not launchable here (launchable: echo, shell)", id="unknown-agent",
    ),
    pytest.param(
        "launch_task", {"agent": "echo", "prompt": "x" * (MAX_PROMPT_CHARS + 1)},
        f"prompt: String should have at most {MAX_PROMPT_CHARS} characters", id="oversize-prompt",
    ),
    pytest.param(
        "launch_task", {"agent": "echo", "prompt": ""},
        "prompt: String should have at least 1 character", id="empty-prompt",
    ),
    pytest.param(
        "launch_task", {"agent": "echo", "prompt": "x", "timeout": -1},
        "timeout: Input should be greater than 0", id="negative-timeout",
    ),
    pytest.param(
        "wait_task", {"task_id": "abc", "timeout": -5},
        "timeout: Input should be greater than or equal to 0", id="negative-wait",
    ),
    pytest.param(
        "launch_task", {"agent": "echo", "prompt": "x", "priority": "high"},
        "priority: Input should be a valid integer", id="wrong-type-priority",
    ),
    pytest.param(
        "task_status", {"task_id": 42},
        "task_id: Input should be a valid string", id="wrong-type-id",
    ),
    pytest.param(
        "launch_task", {"agent": "echo"},
        "prompt: missing (it is required)", id="missing-prompt",
    ),
    pytest.param(
        "cancel_task", {"task_id": "abc", "forcefully": True},
        "forcefully: unknown argument", id="unknown-argument",
    ),
    pytest.param(
        "launch_task", {"agent": "echo", "prompt": "x", "parent_id": "ghost"},
        "no task with id 'ghost'", id="unknown-parent",
    ),
    pytest.param(
        "list_tasks", {"state": "done"},
        "state: Input should be 'pending'", id="unknown-state",
    ),
    pytest.param("erase_log", {}, "unknown tool 'erase_log'", id="unknown-tool"),
    pytest.param(
        "task_status", {"task_id": "line\nbreak"},
        "invalid task id", id="control-character-id",
    ),
] + [
    pytest.param(tool, {"task_id": "nope"}, "no task with id 'nope'", id=f"unknown-id-{tool}")
    for tool in ("task_status", "task_output", "wait_task", "cancel_task", "task_history")
]  # fmt: skip


@pytest.mark.parametrize(("tool", "arguments", "reason"), BAD_CALLS)
async def test_bad_call_is_a_one_line_tool_error_and_writes_nothing(
    db_path: Path, config_path: Path, tool: str, arguments: dict[str, Any], reason: str
) -> None:
    """The call is refused with a one-line reason; the log is unchanged."""
    async with in_process(db_path, config_path) as client:
        before = event_count(db_path)
        result = await client.call_tool(tool, arguments)
        after = event_count(db_path)
    assert reason in tool_error(result)
    assert after == before


async def test_shell_is_not_launchable_without_allow_agent(
    db_path: Path, config_path: Path
) -> None:
    """Without --allow-agent shell, launching a shell command is refused."""
    async with in_process(db_path, config_path, allow_shell=False) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("launch_task", {"agent": "shell", "prompt": "id"})
    assert tools["launch_task"].input_schema["properties"]["agent"]["enum"] == ["echo"]
    assert "agent 'shell' is not launchable here (launchable: echo)" in tool_error(result)
    assert event_count(db_path) == 0


async def test_reading_past_the_end_of_the_output_is_refused(
    db_path: Path, config_path: Path
) -> None:
    """task_output with `since` past the end names the output's length."""
    async with in_process(db_path, config_path) as client:
        done = payload(await client.call_tool("run_task", {"agent": "echo", "prompt": "hi"}))
        before = event_count(db_path)
        result = await client.call_tool("task_output", {"task_id": done["task_id"], "since": 99})
    assert "since 99 is past the end of the output (14 characters so far)" in tool_error(result)
    assert event_count(db_path) == before
