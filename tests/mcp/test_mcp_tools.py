"""What each tool does, through the SDK's client against the server in this process:
paging output, waiting, run timeouts, listing filters, cascading cancel, launch-only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mcp.client import Client
from mcp_clients import in_process, payload, tool_error, until

from tasktrail import TaskManager, TaskState
from tasktrail.runtime._recovery import pid_exists


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured record."""
    return payload(await client.call_tool(tool, arguments))


async def test_output_pages_with_since_and_max_chars(db_path: Path, config_path: Path) -> None:
    """Pages of `max_chars` follow each other through `next` until `more` is false."""
    async with in_process(db_path, config_path) as client:
        done = await call(client, "run_task", agent="shell", prompt="printf 'abcdefgh'")
        pages, since = [], 0
        while True:
            page = await call(client, "task_output", task_id=done["task_id"], since=since,
                              max_chars=3)  # fmt: skip
            pages.append(page["text"])
            since = page["next"]
            if not page["more"]:
                break
    assert pages == ["abc", "def", "gh"]
    assert page["finished"] is True
    assert page["total_chars"] == 8


async def test_output_wait_returns_when_new_output_arrives(
    db_path: Path, config_path: Path, tmp_path: Path
) -> None:
    """A waiting task_output call returns as soon as output past `since` is written."""
    go = tmp_path / "go"
    async with in_process(db_path, config_path) as client:
        task_id = (
            await call(
                client, "launch_task", agent="shell",
                prompt=f"echo one; until [ -e {go} ]; do sleep 0.05; done; echo two",
            )
        )["task_id"]  # fmt: skip
        first = await call(client, "task_output", task_id=task_id, wait=60)
        assert first["text"] == "one\n"
        waiting = asyncio.ensure_future(
            client.call_tool(
                "task_output", {"task_id": task_id, "since": first["next"], "wait": 60}
            )
        )
        await asyncio.sleep(0)
        go.touch()
        second = payload(await waiting)
    assert second["text"] == "two\n"


async def test_wait_task_times_out_without_error(db_path: Path, config_path: Path) -> None:
    """wait_task on a task that does not finish in time says `finished: false`."""
    async with in_process(db_path, config_path) as client:
        task_id = (await call(client, "launch_task", agent="shell", prompt="sleep 60"))["task_id"]
        waited = await call(client, "wait_task", task_id=task_id, timeout=0)
        await call(client, "cancel_task", task_id=task_id, force=True)
    assert waited["finished"] is False
    assert waited["state"] in ("pending", "starting", "running")


async def test_a_run_timeout_stops_and_fails_the_task(db_path: Path, config_path: Path) -> None:
    """launch_task's timeout ends the task's process and fails it, saying why."""
    async with in_process(db_path, config_path) as client:
        task_id = (
            await call(client, "launch_task", agent="shell", prompt="sleep 60", timeout=0.5)
        )["task_id"]
        done = await call(client, "wait_task", task_id=task_id, timeout=60)
    assert done["state"] == "failed"
    assert done["timeout"] == 0.5
    assert "run timeout of 0.5 s expired" in done["error"]
    assert not pid_exists(int(done["session_id"].removeprefix("pid:")))


async def test_list_filters_and_cancel_cascades_to_children(
    db_path: Path, config_path: Path
) -> None:
    """list_tasks filters by parent, agent and state; cancelling a parent cancels its child."""
    async with in_process(db_path, config_path) as client:
        parent = (await call(client, "launch_task", agent="shell", prompt="sleep 60"))["task_id"]
        child = (
            await call(client, "launch_task", agent="shell", prompt="sleep 61", parent_id=parent)
        )["task_id"]
        echoed = (await call(client, "run_task", agent="echo", prompt="x"))["task_id"]
        children = await call(client, "list_tasks", parent_id=parent)
        echoes = await call(client, "list_tasks", agent="echo")
        unfinished = await call(client, "list_tasks", state="unfinished")
        await call(client, "cancel_task", task_id=parent, reason="done with it")
        after = await call(client, "wait_task", task_id=child, timeout=60)
        trail = await call(client, "task_history", task_id=child)
        newest = await call(client, "list_tasks", limit=1)
    assert [t["task_id"] for t in children["tasks"]] == [child]
    assert [t["task_id"] for t in echoes["tasks"]] == [echoed]
    assert {t["task_id"] for t in unfinished["tasks"]} == {parent, child}
    assert after["state"] == "cancelled"
    requested = next(e for e in trail["events"] if e["event"] == "task.cancel_requested")
    assert (requested["actor"], requested["reason"]) == (
        "mcp:pytest",
        f"parent {parent} cancelled: done with it",
    )
    assert [t["task_id"] for t in newest["tasks"]] == [echoed]


async def test_cancel_of_a_finished_task_leaves_it(db_path: Path, config_path: Path) -> None:
    """cancel_task on a finished task changes nothing and says so."""
    async with in_process(db_path, config_path) as client:
        done = await call(client, "run_task", agent="echo", prompt="x")
        cancelled = await call(client, "cancel_task", task_id=done["task_id"])
        history = await call(client, "task_history", task_id=done["task_id"])
    assert cancelled["state"] == "completed"
    assert "already completed" in cancelled["note"]
    assert history["events"][-1]["event"] == "task.completed"


async def test_run_task_reports_a_failed_command_as_an_error(
    db_path: Path, config_path: Path
) -> None:
    """run_task of a failing command: an error result carrying the exit code and output."""
    async with in_process(db_path, config_path) as client:
        result = await client.call_tool(
            "run_task", {"agent": "shell", "prompt": "echo partial; exit 7"}
        )
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["exit_code"] == 7
    assert result.structured_content["output"] == "partial\n"


async def test_run_task_returns_the_id_of_a_task_still_running(
    db_path: Path, config_path: Path
) -> None:
    """run_task whose `wait` runs out returns the task, still going, with how to follow it."""
    async with in_process(db_path, config_path) as client:
        still = await call(client, "run_task", agent="shell", prompt="sleep 60", wait=0)
        await call(client, "cancel_task", task_id=still["task_id"], force=True)
    assert still["finished"] is False
    assert "task_output" in still["next"]


async def test_without_a_worker_tasks_wait_for_a_separate_worker(
    db_path: Path, config_path: Path
) -> None:
    """--no-worker: launched tasks stay pending until a separate worker runs them."""
    async with in_process(db_path, config_path, worker=False) as client:
        task_id = (await call(client, "launch_task", agent="echo", prompt="later"))["task_id"]
        pending = await call(client, "task_status", task_id=task_id)
        async with TaskManager(db_path, poll_interval=0.05) as worker:

            async def echo(ctx: Any) -> str:
                await ctx.write(f"ran {ctx.task.prompt}\n")
                return "ok"

            worker.register("echo", echo)
            done = await call(client, "wait_task", task_id=task_id, timeout=60)
    assert pending["state"] == "pending"
    assert done["state"] == "completed"
    assert done["worker_id"] == worker.worker_id


async def test_a_launch_timeout_binds_a_separate_worker(db_path: Path, config_path: Path) -> None:
    """--no-worker: the timeout is recorded in the task, and the worker that runs it, in
    another manager, stops and fails it."""
    async with in_process(db_path, config_path, worker=False) as client:
        task_id = (await call(client, "launch_task", agent="echo", prompt="forever", timeout=0.5))[
            "task_id"
        ]
        async with TaskManager(db_path, poll_interval=0.05, cancel_grace=0.1) as worker:

            async def forever(ctx: Any) -> None:
                await asyncio.Event().wait()

            worker.register("echo", forever)
            done = await call(client, "wait_task", task_id=task_id, timeout=60)
    assert done["state"] == "failed"
    assert done["timeout"] == 0.5
    assert "run timeout of 0.5 s expired" in done["error"]


async def test_history_lists_output_events_on_request(db_path: Path, config_path: Path) -> None:
    """task_history counts output events, and lists them with include_output."""
    async with in_process(db_path, config_path) as client:
        done = await call(client, "run_task", agent="echo", prompt="x")
        short = await call(client, "task_history", task_id=done["task_id"])
        full = await call(client, "task_history", task_id=done["task_id"], include_output=True)
    assert short["output_events"] >= 1
    assert "task.output" not in [e["event"] for e in short["events"]]
    assert [e["event"] for e in full["events"]].count("task.output") == short["output_events"]


async def test_the_model_sees_unknown_ids_as_errors_it_can_fix(
    db_path: Path, config_path: Path
) -> None:
    """A typo in an id says which id is unknown."""
    async with in_process(db_path, config_path) as client:
        done = await call(client, "run_task", agent="echo", prompt="x")
        result = await client.call_tool("task_status", {"task_id": done["task_id"][:-1]})
    assert tool_error(result) == f"no task with id {done['task_id'][:-1]!r}"


async def test_a_forced_cancel_ends_a_running_task_at_once(
    db_path: Path, config_path: Path
) -> None:
    """cancel_task with force: the running task is cancelled when the call returns."""
    async with in_process(db_path, config_path) as client:
        task_id = (await call(client, "launch_task", agent="shell", prompt="sleep 60"))["task_id"]

        async def running() -> bool:
            return (await call(client, "task_status", task_id=task_id))["state"] == "running"

        await until(running, "the task to run")
        cancelled = await call(client, "cancel_task", task_id=task_id, force=True)
    assert cancelled["state"] == TaskState.CANCELLED.value


async def test_tools_work_on_each_backend(database: str, config_path: Path) -> None:
    """On SQLite and on PostgreSQL: run a task, read its output and history."""
    async with in_process(database, config_path, name="both") as client:
        done = await call(client, "run_task", agent="echo", prompt="anywhere")
        output = await call(client, "task_output", task_id=done["task_id"])
        history = await call(client, "task_history", task_id=done["task_id"])
    assert done["state"] == "completed"
    assert output["text"] == "echo says: anywhere\n"
    assert history["events"][0]["actor"] == "mcp:both"
