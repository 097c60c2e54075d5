"""The session of docs/how-to/coding-agents.md, call for call: two sub-agents launched,
one followed, the other cancelled, the first waited for; the history names the client.

A stand-in plays the `claude` agent: it prints what the how-to shows, then waits for a
file before it finishes, so the test decides when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp.client import Client
from mcp_clients import in_process, payload

STAND_IN = """
[worker]
poll_interval = 0.05
cancel_grace = 1.0

[agents.claude]
command = ["/bin/sh", "-c", "echo 'reading src/shop/api.py'; until [ -e {go} ]; do sleep 0.05; done; echo 'two handlers swallow errors'", "{{prompt}}"]
description = "stands in for Claude Code"
"""  # noqa: E501


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured record."""
    return payload(await client.call_tool(tool, arguments))


async def test_the_how_to_session(db_path: Path, tmp_path: Path) -> None:
    """Launch two, follow one, cancel the other with a reason, wait; audit the cancel."""
    go = tmp_path / "go"
    config = tmp_path / "tasktrail.toml"
    config.write_text(STAND_IN.format(go=go))
    async with in_process(db_path, config, allow_shell=False, name="claude-code") as client:
        review = await call(
            client, "launch_task", agent="claude", description="review api errors",
            prompt="Review the error handling in src/shop/api.py; list what is missing",
        )  # fmt: skip
        tests = await call(
            client, "launch_task", agent="claude", description="tests for models",
            prompt="Write pytest tests for src/shop/models.py",
        )  # fmt: skip
        assert review["state"] == tests["state"] == "pending"
        page = await call(client, "task_output", task_id=review["task_id"], since=0, wait=20)
        assert page["text"] == "reading src/shop/api.py\n"
        assert page["next"] == 24
        assert (page["state"], page["more"], page["finished"]) == ("running", False, False)
        unfinished = await call(client, "list_tasks", state="unfinished")
        assert len(unfinished["tasks"]) == 2
        cancelled = await call(
            client, "cancel_task", task_id=tests["task_id"], reason="models.py is being rewritten"
        )
        # cancelled at once, or (on a loaded machine) still stopping within the grace period
        assert cancelled["note"] in (
            "cancelled (its descendants too)",
            "cancel requested: its worker stops the process (SIGTERM, then SIGKILL after the "
            "grace period) and records cancelled; wait_task shows the end",
        )
        go.touch()
        done = await call(client, "wait_task", task_id=review["task_id"], timeout=60)
        assert (done["state"], done["finished"]) == ("completed", True)
        assert done["output_chars"] == len("reading src/shop/api.py\ntwo handlers swallow errors\n")
        history = await call(client, "task_history", task_id=tests["task_id"])
    events = [(e["event"], e["actor"], e.get("reason")) for e in history["events"]]
    assert events[0] == ("task.created", "mcp:claude-code", None)
    assert events[-2] == (
        "task.cancel_requested",
        "mcp:claude-code",
        "models.py is being rewritten",
    )
    assert events[-1][0] == "task.cancelled"
