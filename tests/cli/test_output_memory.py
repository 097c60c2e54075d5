"""The reading commands use memory independent of a task's output size (real processes).

One task with 160 MB of output and one with a single line, in one database of each backend:
each command runs as a fresh ``python -m tasktrail`` process, and its peak resident size
(``ru_maxrss`` from ``wait4``) on the big task must stay within a fixed margin of the same
command on the small one. Reading the whole stream at once needs over twice the output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from pgserver import PostgresServer
from tasktrail import (
    NewEvent,
    OutputAppended,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    open_store,
)

OUTPUT_MB = 160
EVENT_BYTES = 128 * 1024
MARGIN_MB = 64
"""What a command may hold beyond its run on the one-line task: bounded chunks of events
and one page of the history table; the output itself would need over 300 MB."""


async def build(database: str) -> None:
    """The task ``big`` with OUTPUT_MB of output and ``small`` with one line."""
    line = "z" * 1023 + "\n"
    async with open_store(database) as store:
        for task_id, count in (("big", OUTPUT_MB * 2**20 // EVENT_BYTES), ("small", 1)):
            start = [
                TaskCreated(agent="shell", prompt="yes"),
                TaskClaimed(worker_id="w", attempt=1),
            ]
            await store.append(task_id, [NewEvent(e) for e in [*start, TaskStarted()]])
            text = line * (EVENT_BYTES // 1024) if task_id == "big" else "one line\n"
            for first in range(0, count, 16):
                batch = min(16, count - first)
                await store.append(
                    task_id, [NewEvent(OutputAppended(text=text)) for _ in range(batch)]
                )
            await store.append(task_id, [NewEvent(TaskCompleted(result=0))])


def peak_mb(database: str, *args: str) -> float:
    """The peak resident size (MB) of ``python -m tasktrail *args``, its output discarded."""
    with (
        open(os.devnull, "wb") as sink,
        subprocess.Popen(
            [sys.executable, "-m", "tasktrail", *args],
            stdout=sink, stderr=subprocess.PIPE, env={**os.environ, "TASKTRAIL_DB": database},
        ) as process,
    ):  # fmt: skip
        assert process.stderr is not None
        err = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the others'
        process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, (args, err)
    return usage.ru_maxrss / 1024


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def big_output(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database of each backend holding the tasks ``big`` and ``small`` (built once)."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database = server.fresh_url()
    else:
        database = str(tmp_path_factory.mktemp("memory") / "tasks.db")
    asyncio.run(build(database))
    return database


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("logs",), id="logs"),
        pytest.param(("history",), id="history"),
        pytest.param(("history", "--json"), id="history-json"),
        pytest.param(("replay", "--json"), id="replay-json"),
    ],
)
def test_reading_a_big_output_takes_bounded_memory(
    big_output: str, command: tuple[str, ...]
) -> None:
    """logs, history and replay of 160 MB of output stay within 64 MB of a one-line task."""
    name, *options = command
    small = peak_mb(big_output, name, "small", *options)
    big = peak_mb(big_output, name, "big", *options)
    assert big - small < MARGIN_MB, f"{name}: {big:.0f} MB vs {small:.0f} MB"


@pytest.mark.slow
def test_verify_of_a_big_output_takes_bounded_memory(big_output: str) -> None:
    """verify (chain and projection) over 160 MB of output stays within 64 MB of `show`."""
    small = peak_mb(big_output, "show", "small")
    big = peak_mb(big_output, "verify")
    assert big - small < MARGIN_MB, f"verify: {big:.0f} MB vs show: {small:.0f} MB"
