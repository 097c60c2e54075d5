"""A client no one here wrote: the MCP Inspector's command-line mode (npm
``@modelcontextprotocol/inspector``) lists the tools and runs a task.

``.ci/run`` installs the Inspector and points ``$TASKTRAIL_MCP_INSPECTOR`` at it; where
neither that variable nor an ``mcp-inspector`` on the PATH exists, these tests are skipped,
saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_clients import plain_env

from tasktrail import open_store


@pytest.fixture
def inspector() -> str:
    """The Inspector's executable."""
    chosen = os.environ.get("TASKTRAIL_MCP_INSPECTOR") or shutil.which("mcp-inspector")
    if not chosen:
        pytest.skip("the MCP Inspector is not installed (.ci/run installs it with npm)")
    assert Path(chosen).exists(), f"no MCP Inspector at $TASKTRAIL_MCP_INSPECTOR={chosen}"
    return chosen


def inspect(inspector: str, db: Path, config: Path, *method: str) -> dict[str, Any]:
    """Run one Inspector CLI call against a fresh `tasktrail mcp` process; its JSON answer.

    The config is found in the working directory (the Inspector takes ``--config`` for
    itself)."""
    assert config == config.parent / "tasktrail.toml"
    server = [sys.executable, "-m", "tasktrail", "mcp", "--db", str(db), "--allow-agent", "shell"]
    done = subprocess.run(
        [inspector, "--cli", *server, "--method", *method],
        capture_output=True, text=True, timeout=120, check=False, env=plain_env(),
        cwd=config.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_the_inspector_lists_the_tools(inspector: str, db_path: Path, config_path: Path) -> None:
    """The Inspector's tools/list shows every tool with its schema."""
    listed = inspect(inspector, db_path, config_path, "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert {"launch_task", "run_task", "task_output", "cancel_task"} <= names
    assert len(names) == 8
    launch = next(tool for tool in listed["tools"] if tool["name"] == "launch_task")
    assert launch["inputSchema"]["properties"]["agent"]["enum"] == ["echo", "shell"]


async def test_the_inspector_runs_a_task_logged_under_its_name(
    inspector: str, db_path: Path, config_path: Path
) -> None:
    """A run_task call from the Inspector completes; the log names it as the actor."""
    answer = inspect(
        inspector, db_path, config_path, "tools/call", "--tool-name", "run_task",
        "--tool-arg", "agent=shell", "--tool-arg", "prompt=echo from the inspector",
    )  # fmt: skip
    assert answer["isError"] is False
    assert answer["structuredContent"]["output"] == "from the inspector\n"
    async with open_store(db_path) as store:
        events = await store.history(answer["structuredContent"]["task_id"])
    assert events[0].actor.startswith("mcp:inspector")
