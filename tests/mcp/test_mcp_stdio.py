"""End to end over stdio: ``tasktrail mcp`` as a real process, the SDK's ``ClientSession``
as the client, as a coding agent runs it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from mcp_clients import over_stdio, payload, until

from mcp import ClientSession
from tasktrail.runtime._recovery import pid_exists

TOOLS = {
    "launch_task", "run_task", "task_status", "task_output", "wait_task", "cancel_task",
    "list_tasks", "task_history",
}  # fmt: skip


async def call(client: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured record."""
    return payload(await client.call_tool(tool, arguments))


async def output_containing(client: ClientSession, task_id: str, text: str) -> dict[str, Any]:
    """Follow the task's output (waiting calls) until it contains ``text``."""

    async def page() -> dict[str, Any] | None:
        got = await call(client, "task_output", task_id=task_id, wait=2.0)
        return got if text in got["text"] else None

    return await until(page, f"{text!r} in the output of {task_id}")


def worker_pid(record: dict[str, Any]) -> int:
    """The process id in a worker id (``host:pid:suffix``)."""
    return int(record["worker_id"].rsplit(":", 2)[1])


def process_id(record: dict[str, Any]) -> int:
    """The process id of a running command task (its session id is ``pid:N``)."""
    return int(record["session_id"].removeprefix("pid:"))


async def test_tools_are_listed_with_schemas_and_annotations(
    db_path: Path, config_path: Path, tmp_path: Path
) -> None:
    """tools/list shows every tool with a description, an input schema and annotations."""
    async with over_stdio(db_path, config_path, tmp_path / "server.log") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 60
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema.get("additionalProperties") is False
        assert tool.annotations is not None
    assert tools["task_output"].annotations.read_only_hint is True
    assert tools["cancel_task"].annotations.destructive_hint is True
    assert tools["launch_task"].annotations.read_only_hint is False
    assert tools["launch_task"].input_schema["properties"]["agent"]["enum"] == ["echo"]
    assert tools["run_task"].execution is not None
    assert tools["run_task"].execution.task_support == "optional"


async def test_launch_follow_output_wait_and_history(
    db_path: Path, config_path: Path, tmp_path: Path
) -> None:
    """A launched task's output is read while it runs, wait returns its end, and its
    history names the MCP client as the actor of the launch."""
    log = tmp_path / "server.log"
    async with over_stdio(
        db_path, config_path, log, "--allow-agent", "shell", name="claude-code"
    ) as client:
        go = tmp_path / "go"
        launched = await call(
            client, "launch_task", agent="shell", description="two lines",
            prompt=f"echo first; until [ -e {go} ]; do sleep 0.05; done; echo second",
        )  # fmt: skip
        assert launched["state"] == "pending"
        task_id = launched["task_id"]
        first = await output_containing(client, task_id, "first\n")
        assert first["finished"] is False
        assert (await call(client, "task_status", task_id=task_id))["state"] == "running"
        go.touch()
        done = await call(client, "wait_task", task_id=task_id, timeout=30)
        assert done["finished"] is True
        assert done["state"] == "completed"
        rest = await call(client, "task_output", task_id=task_id, since=first["next"])
        assert rest["text"] == "second\n"
        assert rest["finished"] is True
        history = await call(client, "task_history", task_id=task_id)
        listed = await call(client, "list_tasks", state="finished")
    events = [e["event"] for e in history["events"]]
    assert events == ["task.created", "task.claimed", "task.started", "task.completed"]
    assert history["events"][0]["actor"] == "mcp:claude-code"
    assert history["output_chars"] == len("first\nsecond\n")
    assert [t["task_id"] for t in listed["tasks"]] == [task_id]


async def test_cancel_stops_a_running_task(
    db_path: Path, config_path: Path, tmp_path: Path
) -> None:
    """cancel_task ends a running task's process; the task ends cancelled."""
    log = tmp_path / "server.log"
    async with over_stdio(db_path, config_path, log, "--allow-agent", "shell") as client:
        task_id = (await call(client, "launch_task", agent="shell", prompt="echo up; sleep 120"))[
            "task_id"
        ]
        await output_containing(client, task_id, "up\n")
        pid = process_id(await call(client, "task_status", task_id=task_id))
        cancelled = await call(client, "cancel_task", task_id=task_id, reason="not needed")
        done = await call(client, "wait_task", task_id=task_id, timeout=30)
        history = await call(client, "task_history", task_id=task_id)
    # cancelled at once, or (on a loaded machine) still stopping within the grace period
    assert cancelled["state"] == "cancelled" or cancelled["cancel_requested"] is True
    assert done["state"] == "cancelled"
    assert not pid_exists(pid)
    requested, ended = history["events"][-2:]
    assert (requested["event"], requested["actor"], requested["reason"]) == (
        "task.cancel_requested",
        "mcp:pytest",
        "not needed",
    )
    assert ended["event"] == "task.cancelled"


async def test_server_killed_mid_task_is_recovered_with_its_output(
    db_path: Path, config_path: Path, tmp_path: Path
) -> None:
    """kill -9 of the server mid-task: the next server records a recovery decision for the
    task, its output so far is intact, and its orphaned process is ended."""
    log = tmp_path / "server.log"
    shell = ("--allow-agent", "shell")
    async with over_stdio(db_path, config_path, log, *shell, name="first") as client:
        task_id = (
            await call(client, "launch_task", agent="shell", prompt="echo before; sleep 120")
        )["task_id"]
        await output_containing(client, task_id, "before\n")
        status = await call(client, "task_status", task_id=task_id)
        os.kill(worker_pid(status), signal.SIGKILL)
    orphan = process_id(status)
    async with over_stdio(db_path, config_path, log, *shell, name="second") as client:
        after = await call(client, "wait_task", task_id=task_id, timeout=30)
        output = await call(client, "task_output", task_id=task_id)
        history = await call(client, "task_history", task_id=task_id)
    assert after["state"] == "failed"
    assert after["reason"].startswith("recovery:")
    assert output["text"] == "before\n"
    assert history["events"][-1]["actor"] == "system"
    assert history["events"][-1]["reason"].startswith("recovery:")

    async def orphan_gone() -> bool:
        return not pid_exists(orphan)

    await until(orphan_gone, "the dead server's `sleep` to be ended")
