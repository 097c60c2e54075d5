"""The command line on a ``postgresql://`` URL: the same commands, the same output."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from helpers import PATH_TO, new
from tasktrail import NewEvent, PostgresEventStore, SQLiteEventStore, TaskState
from tasktrail.cli import main


def two_tasks() -> dict[str, list[NewEvent]]:
    """The events of one completed and one failed task."""
    return {
        "done": [new(t) for t in PATH_TO[TaskState.COMPLETED]],
        "broken": [new(t) for t in PATH_TO[TaskState.FAILED]],
    }


async def fill(
    store: PostgresEventStore | SQLiteEventStore, tasks: dict[str, list[NewEvent]] | None = None
) -> None:
    """Append ``tasks`` (by default :func:`two_tasks`) to ``store``."""
    async with store:
        for task_id, events in (tasks or two_tasks()).items():
            await store.append(task_id, events)


def run(*args: str) -> tuple[int, str]:
    """Invoke the CLI in-process; return exit code and stdout."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout


def test_cli_commands_take_a_postgres_url(pg_url: str) -> None:
    """ls, verify, rebuild and export work on --db postgresql://... as on a file."""
    asyncio.run(fill(PostgresEventStore(pg_url)))
    code, out = run("ls", "--db", pg_url, "--json")
    assert code == 0
    assert {t["id"]: t["state"] for t in map(json.loads, out.splitlines())} == {
        "done": "completed",
        "broken": "failed",
    }
    code, out = run("verify", "--db", pg_url, "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["events"], report["append_only"], report["projection_mismatches"]) == (
        6,
        True,
        [],
    )
    assert run("rebuild", "--db", pg_url)[0] == 0
    code, out = run("export", "--db", pg_url)
    assert code == 0
    assert [json.loads(line)["sequence"] for line in out.splitlines()] == list(range(1, 7))


def test_exports_of_both_backends_agree(pg_url: str, tmp_path) -> None:
    """The same events at the same clock export byte for byte alike: the same hash chain."""
    path = tmp_path / "same.db"
    tasks = two_tasks()
    asyncio.run(fill(PostgresEventStore(pg_url, clock=lambda: 1_800_000_000.25), tasks))
    asyncio.run(fill(SQLiteEventStore(path, clock=lambda: 1_800_000_000.25), tasks))
    exports = [run("export", "--db", db)[1] for db in (pg_url, str(path))]
    assert exports[0] == exports[1]
    assert len(exports[0].splitlines()) == 6
