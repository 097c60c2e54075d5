"""`ls` at scale and how tables read: pages, cursors, filters, fitted tables at 80 and 200
columns and in a pipe, task id prefixes, the JSON convention, --db before the command."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import json_lines
from tasktrail import NewEvent, SQLiteEventStore, TaskClaimed, TaskCreated, TaskFailed
from tasktrail.cli import main
from tasktrail.projection import Task

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LONG = "Summarise the README [red]and[/] then\nwrite a long description " + "of it all " * 20
WORKER = "build-host-17.example.internal:123456:abcdef"


async def _fill(path: Path, count: int) -> None:
    """``count`` tasks t000..: every third of agent `a-very-long-agent-name-indeed`, the
    rest `shell`; t001 held by WORKER with a long description; t002 failed."""
    ticks = itertools.count()
    async with SQLiteEventStore(path, clock=lambda: T0 + next(ticks)) as store:
        for n in range(count):
            agent = "a-very-long-agent-name-indeed" if n % 3 == 0 else "shell"
            description = LONG if n == 1 else f"task number {n}"
            await store.append(
                f"t{n:03d}",
                [NewEvent(TaskCreated(agent=agent, prompt="p", description=description))],
            )
        if count > 2:
            await store.append("t001", [NewEvent(TaskClaimed(worker_id=WORKER, attempt=1))])
            await store.append("t002", [NewEvent(TaskFailed(error="boom"))])


@pytest.fixture
def tasks60(db_path: Path) -> Path:
    """A database of 60 tasks created a second apart."""
    asyncio.run(_fill(db_path, 60))
    return db_path


def run(db: Path, *args: str, columns: int | None = None) -> tuple[int, str, str]:
    """The command in-process (stdout is not a terminal: piped), at ``columns`` if given."""
    env = {"COLUMNS": str(columns)} if columns else {"COLUMNS": ""}
    result = CliRunner().invoke(main, ["--db", str(db), *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def ids(out: str) -> list[str]:
    """The task ids of a --json listing."""
    return [task["id"] for task in json_lines(out)]


# -- pages --------------------------------------------------------------------------------------


def test_ls_prints_a_page_of_50_and_says_how_to_go_on(tasks60: Path) -> None:
    """Without --limit, ls prints the 50 newest and a line naming the next page's cursor."""
    code, out, _ = run(tasks60, "ls")
    assert code == 0
    shown = [line.split()[0] for line in out.splitlines() if line.startswith("t0")]
    assert shown == [f"t{n:03d}" for n in range(59, 9, -1)]
    assert "10 more: next page with --cursor t010 (or --limit N, --all)" in out


def test_the_cursor_pages_to_the_end(tasks60: Path) -> None:
    """--cursor continues after the task named; the pages cover every task once."""
    first = ids(run(tasks60, "ls", "--json", "--limit", "25")[1])
    second = ids(run(tasks60, "ls", "--json", "--limit", "25", "--cursor", first[-1])[1])
    code, out, err = run(tasks60, "ls", "--json", "--limit", "25", "--cursor", second[-1])
    assert code == 0
    assert first + second + ids(out) == [f"t{n:03d}" for n in range(59, -1, -1)]
    assert err == ""  # the last page: nothing more


def test_json_says_more_on_stderr(tasks60: Path) -> None:
    """With --json, stdout holds only tasks; the "more" line goes to stderr."""
    code, out, err = run(tasks60, "ls", "--json", "--limit", "5")
    assert code == 0
    assert len(json_lines(out)) == 5
    assert "55 more: next page with --cursor t055" in err


def test_all_offset_and_limit(tasks60: Path) -> None:
    """--all lists every task; --offset skips; --limit bounds; --all with --limit is refused."""
    assert len(ids(run(tasks60, "ls", "--json", "--all")[1])) == 60
    assert ids(run(tasks60, "ls", "--json", "--offset", "58")[1]) == ["t001", "t000"]
    assert ids(run(tasks60, "ls", "--json", "--limit", "2", "--sort", "oldest")[1]) == [
        "t000",
        "t001",
    ]
    code, _, err = run(tasks60, "ls", "--all", "--limit", "3")
    assert code == 2 and "--all" in err


def test_filters_time_worker_agent_and_sort(tasks60: Path) -> None:
    """--since/--until take times and ago-durations; --worker, repeated --agent, --sort."""
    at = datetime.fromtimestamp(T0 + 57, UTC).isoformat()
    assert ids(run(tasks60, "ls", "--json", "--since", at)[1]) == ["t059", "t058", "t057"]
    assert ids(run(tasks60, "ls", "--json", "--until", datetime.fromtimestamp(
        T0 + 2, UTC).isoformat())[1]) == ["t001", "t000"]  # fmt: skip
    assert ids(run(tasks60, "ls", "--json", "--since", "1h")[1]) == []  # 2026 lies far back
    assert len(ids(run(tasks60, "ls", "--json", "--until", "1h", "--all")[1])) == 60
    assert ids(run(tasks60, "ls", "--json", "--worker", WORKER)[1]) == ["t001"]
    both = ids(run(tasks60, "ls", "--json", "--all", "--agent", "shell", "--agent",
                   "a-very-long-agent-name-indeed")[1])  # fmt: skip
    assert len(both) == 60
    assert ids(run(tasks60, "ls", "--json", "--sort", "updated", "--limit", "2")[1]) == [
        "t002",
        "t001",
    ]


def test_an_empty_listing_says_so(db_path: Path) -> None:
    """No task, or none matching, is one line, not an empty table."""
    asyncio.run(_fill(db_path, 0))
    assert run(db_path, "ls")[1].strip() == "no tasks yet"
    assert run(db_path, "ls", "--agent", "x")[1].strip() == "no task matches"


# -- tables at 80 and 200 columns, and piped ---------------------------------------------------


def _table_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("columns", [80, 200, None], ids=["80", "200", "piped"])
def test_ls_table_fits_and_never_folds(tasks60: Path, columns: int | None) -> None:
    """Every line fits the width (160 piped); ids whole; free text on one line with ⏎,
    ended by … when cut; values printed as written (no markup)."""
    width = columns or 160
    code, out, _ = run(tasks60, "ls", "--limit", "60", columns=columns)
    assert code == 0
    lines = _table_lines(out)
    assert max(len(line) for line in lines) <= width
    rows = [line for line in lines if line.startswith("t0")]
    assert [row.split()[0] for row in rows] == [f"t{n:03d}" for n in range(59, -1, -1)]
    held = next(row for row in rows if row.startswith("t001"))
    assert "…" in held  # the long description is cut, not wrapped
    assert "build-h" in held  # the worker, whole or ellipsized
    if width >= 160:
        assert "Summarise the README [red]and[/] then⏎write" in held  # markup shown as is
    if width >= 200:
        assert WORKER in held  # room for the whole worker id
    assert "descripti" not in out.replace("description", "")  # no header folded


@pytest.mark.parametrize("columns", [80, 200, None], ids=["80", "200", "piped"])
def test_history_table_fits(tasks60: Path, columns: int | None) -> None:
    """history's rows fit the width; event names and actors are never folded."""
    code, out, _ = run(tasks60, "history", "t001", columns=columns)
    assert code == 0
    lines = _table_lines(out)
    assert max(len(line) for line in lines) <= (columns or 160)
    assert any("task.created" in line for line in lines)
    assert any("task.claimed" in line for line in lines)


@pytest.mark.parametrize("columns", [80, 200], ids=["80", "200"])
def test_tables_in_a_real_process(tasks60: Path, columns: int) -> None:
    """As a subprocess (stdout a pipe, $COLUMNS set): ls, stats and show fit the width."""
    env = {**os.environ, "COLUMNS": str(columns), "TASKTRAIL_DB": str(tasks60)}
    env.pop("PYTHONASYNCIODEBUG", None)  # its slow-callback notes would fill stderr
    for args in (["ls"], ["stats"], ["show", "t001"]):
        done = subprocess.run(
            [sys.executable, "-m", "tasktrail", *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert max(len(line) for line in done.stdout.splitlines()) <= columns, args
        assert done.stderr == ""


def test_piped_output_is_160_columns_wide(tasks60: Path) -> None:
    """Piped, without $COLUMNS: lines up to 160 columns (not cut at 80)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "tasktrail", "--db", str(tasks60), "ls", "--limit", "3"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    width = max(len(line) for line in done.stdout.splitlines())
    assert 80 < width <= 160


# -- task id prefixes ---------------------------------------------------------------------------


def test_a_unique_prefix_names_the_task(db_path: Path) -> None:
    """show, history, replay, logs, wait, rerun and cancel accept an unambiguous prefix."""

    async def fill() -> None:
        async with SQLiteEventStore(db_path) as store:
            for task_id in ("3f2a9c1d0e4b", "3f2b00000000", "77aa00000000"):
                await store.append(task_id, [NewEvent(TaskCreated(agent="shell", prompt="p"))])

    asyncio.run(fill())
    code, out, _ = run(db_path, "show", "3f2a", "--json")
    assert (code, json.loads(out)["id"]) == (0, "3f2a9c1d0e4b")
    for args in (("history", "77"), ("replay", "77"), ("logs", "77"), ("show", "77a")):
        assert run(db_path, *args)[0] == 0, args
    assert json_lines(run(db_path, "history", "77", "--json")[1])[0]["stream_id"] == (
        "77aa00000000"
    )
    rerun = run(db_path, "rerun", "77", "--json")[1]
    assert json.loads(rerun)["rerun_of"] == "77aa00000000"
    code, out, _ = run(db_path, "cancel", "3f2b")
    assert (code, out) == (0, "3f2b00000000: cancelled\n")
    code, out, _ = run(db_path, "wait", "3f2b", "--json")
    assert code == 12 and json.loads(out)["id"] == "3f2b00000000"
    code, _, err = run(db_path, "show", "3f")
    assert code == 2
    assert "task id prefix '3f' fits 2 tasks: 3f2a9c1d0e4b, 3f2b00000000; type more" in err


def test_an_ambiguous_prefix_lists_the_candidates(tasks60: Path) -> None:
    """An ambiguous prefix exits 2 naming up to 10 candidates and how many more."""
    code, _, err = run(tasks60, "show", "t")
    assert code == 2
    assert err.count("\n") == 1  # one line
    assert "task id prefix 't' fits 60 tasks: t000, t001" in err
    assert "and 50 more; type more of the id" in err
    code, _, err = run(tasks60, "show", "x9")
    assert code == 3 and "no task with id 'x9'" in err


# -- the JSON convention ------------------------------------------------------------------------


def test_json_records_have_every_field_and_iso_times(tasks60: Path) -> None:
    """Every --json task has all of Task's fields (null when unset), times in ISO 8601 UTC."""
    task = json.loads(run(tasks60, "show", "t001", "--json")[1])
    assert set(task) == set(Task.__struct_fields__)
    assert task["parent_id"] is None and task["error"] is None
    assert task["created_at"] == "2026-01-01T00:00:01Z"
    assert task["not_before"] is None
    event = json_lines(run(tasks60, "history", "t002", "--json")[1])[-1]
    assert event["timestamp"].endswith("Z") and event["payload"]["type"] == "task.failed"
    assert event["payload"]["exit_code"] is None
    exported = json_lines(run(tasks60, "export", "--since", "61")[1])
    assert exported[0]["sequence"] == 62 and exported[0]["timestamp"].endswith("Z")
    figures = json.loads(run(tasks60, "stats", "--json")[1])
    assert figures["oldest_pending"]["created_at"] == "2026-01-01T00:00:00Z"
    rebuilt = json.loads(run(tasks60, "rebuild", "--json")[1])
    assert rebuilt == {"tasks": 60, "events": 62}


# -- --db before the command --------------------------------------------------------------------


def test_db_before_the_command_and_after_it(tasks60: Path, tmp_path: Path) -> None:
    """`tasktrail --db X ls` works; the command's own --db wins; $TASKTRAIL_DB is the default."""
    other = tmp_path / "other.db"
    asyncio.run(_fill(other, 2))
    runner = CliRunner()
    result = runner.invoke(main, ["--db", str(tasks60), "ls", "--json", "--all"])
    assert len(json_lines(result.stdout)) == 60
    result = runner.invoke(main, ["--db", str(tasks60), "ls", "--json", "--db", str(other)])
    assert ids(result.stdout) == ["t001", "t000"]
    result = runner.invoke(main, ["ls", "--json"], env={"TASKTRAIL_DB": str(other)})
    assert ids(result.stdout) == ["t001", "t000"]
    result = runner.invoke(main, ["--db", "", "ls"])
    assert result.exit_code == 2 and "--db is empty" in result.stderr
