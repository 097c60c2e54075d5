"""The command line, in-process (click's runner) and as a real subprocess."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import PATH_TO, new
from tasktrail import SQLiteEventStore, TaskState
from tasktrail.cli import main


@pytest.fixture
async def populated(db_path: Path) -> Path:
    """A database with one completed and one failed task."""
    async with SQLiteEventStore(db_path) as store:
        await store.append("done", [new(t) for t in PATH_TO[TaskState.COMPLETED]])
        await store.append("broken", [new(t) for t in PATH_TO[TaskState.FAILED]])
    return db_path


def run(*args: str) -> tuple[int, str, str]:
    """Invoke the CLI in-process; return exit code, stdout and stderr."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ls_json_matches_the_api(populated: Path) -> None:
    """`ls --json` lists every task with the API's field names and values."""
    code, out, _ = run("ls", "--db", str(populated), "--json")
    assert code == 0
    tasks = json.loads(out)
    assert {t["id"]: t["state"] for t in tasks} == {"done": "completed", "broken": "failed"}


def test_ls_filters_by_state(populated: Path) -> None:
    """`ls --state failed` shows only failed tasks."""
    code, out, _ = run("ls", "--db", str(populated), "--state", "failed", "--json")
    assert code == 0
    assert [t["id"] for t in json.loads(out)] == ["broken"]


def test_show_and_history(populated: Path) -> None:
    """`show` prints the record; `history --json` prints one event per line."""
    code, out, _ = run("show", "done", "--db", str(populated), "--json")
    assert code == 0
    assert json.loads(out)["version"] == 4
    code, out, _ = run("history", "done", "--db", str(populated), "--json")
    assert code == 0
    assert [json.loads(line)["type"] for line in out.splitlines()] == [
        "task.created",
        "task.claimed",
        "task.started",
        "task.completed",
    ]


def test_unknown_task_is_one_line_and_exit_3(populated: Path) -> None:
    """An unknown id prints one line on stderr and exits 3, no traceback."""
    code, out, err = run("show", "nope", "--db", str(populated))
    assert code == 3
    assert err.strip() == "tasktrail: error: no task with id 'nope'"
    assert "Traceback" not in out + err


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    """A database that does not exist is reported, not created."""
    code, _, err = run("ls", "--db", str(tmp_path / "none.db"))
    assert code == 9
    assert "no database at" in err
    assert not (tmp_path / "none.db").exists()


def test_verify_names_the_tampered_event(populated: Path) -> None:
    """`verify` exits 5 naming the edited event's sequence number."""
    code, out, _ = run("verify", "--db", str(populated))
    assert code == 0
    assert "chain ok: 6 events" in out
    with sqlite3.connect(populated) as raw:
        raw.execute("DROP TRIGGER events_append_only_update")
        raw.execute("UPDATE events SET data = replace(data, 'boom', 'bam!') WHERE seq = 6")
    code, _, err = run("verify", "--db", str(populated))
    assert code == 5
    assert "sequence 6" in err


def test_rebuild_and_export(populated: Path) -> None:
    """`rebuild` replays the projection; `export --since` prints JSON lines after it."""
    code, out, _ = run("rebuild", "--db", str(populated))
    assert (code, out.strip()) == (0, "rebuilt 2 task(s) from the log")
    code, out, _ = run("export", "--db", str(populated), "--since", "4")
    assert [json.loads(line)["sequence"] for line in out.splitlines()] == [5, 6]


def test_database_from_environment(populated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --db the database comes from $TASKTRAIL_DB."""
    monkeypatch.setenv("TASKTRAIL_DB", str(populated))
    code, out, _ = run("ls", "--json")
    assert code == 0
    assert len(json.loads(out)) == 2


def test_corrupt_database_exit_6(tmp_path: Path) -> None:
    """A file that is not a database exits 6 with one line."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    code, _, err = run("ls", "--db", str(bad))
    assert code == 6
    assert len(err.strip().splitlines()) == 1


def test_demo_runs_as_a_subprocess(tmp_path: Path) -> None:
    """`tasktrail demo` runs end to end: nothing lost, chain verified, tampering found."""
    proc = subprocess.run(
        [sys.executable, "-m", "tasktrail", "demo", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "acknowledged events missing after the crash: 0" in proc.stdout
    assert "verified" in proc.stdout
    assert "tampered at sequence" in proc.stdout
    with sqlite3.connect(tmp_path / "demo.db") as raw:
        states = dict(raw.execute("SELECT id, state FROM tasks WHERE id LIKE 'task-%'"))
    assert states["task-01"] == "failed"
    assert states["task-02"] == "cancelled"
