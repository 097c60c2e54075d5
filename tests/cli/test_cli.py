"""Every command in-process (click's runner), against a real database file."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import PATH_TO, CliRun, json_lines, new
from tasktrail import SQLiteEventStore, TaskState
from tasktrail.cli import EXIT_CODES, main
from tasktrail.cli._json import dumps


@pytest.fixture
async def populated(db_path: Path) -> Path:
    """A database with one completed and one failed task."""
    async with SQLiteEventStore(db_path) as store:
        await store.append("done", [new(t) for t in PATH_TO[TaskState.COMPLETED]])
        await store.append("broken", [new(t) for t in PATH_TO[TaskState.FAILED]])
    return db_path


def api_json(value: object) -> object:
    """The Python API's records as the command line's --json prints them (see
    docs/reference/json.md: every field, times in ISO 8601 UTC)."""
    if isinstance(value, list):
        return [api_json(item) for item in value]
    return json.loads(dumps(value))


def api(db_path: Path, call: Callable[[SQLiteEventStore], Awaitable[object]]) -> object:
    """What ``call(store)`` returns through the Python API, encoded as JSON.

    The CLI tests are synchronous: each command runs its own event loop.
    """

    async def main() -> object:
        async with SQLiteEventStore(db_path) as store:
            return api_json(await call(store))

    return asyncio.run(main())


# -- submit, worker, run ----------------------------------------------------------------------


def test_submit_prints_the_id_and_creates_the_database(cli: CliRun, db_path: Path) -> None:
    """`submit` creates the database and prints only the new task's id."""
    code, out, _ = cli("submit", "shell", "echo", "hi")
    assert code == 0
    task_id = out.strip()
    with sqlite3.connect(db_path) as raw:
        row = raw.execute(
            "SELECT state, agent, record ->> 'prompt' FROM tasks WHERE id = ?", (task_id,)
        )
        assert row.fetchone() == ("pending", "shell", "echo hi")


def test_submit_json_matches_the_api_record(cli: CliRun, db_path: Path) -> None:
    """`submit --json` prints the record `get_task` returns."""
    code, out, _ = cli("submit", "echo", "x", "--id", "t1", "--priority", "3", "--json")
    assert code == 0
    assert json.loads(out) == api(db_path, lambda store: store.get_task("t1"))
    assert json.loads(out)["priority"] == 3


def test_submit_reads_the_prompt_from_stdin(cli: CliRun) -> None:
    """A prompt of `-` is read from standard input, newlines and all."""
    code, out, _ = cli("submit", "shell", "-", "--json", input="echo a\necho b\n")
    assert code == 0
    assert json.loads(out)["prompt"] == "echo a\necho b\n"


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        pytest.param((), None, id="none"),
        pytest.param(("",), None, id="empty"),
        pytest.param(("  ",), None, id="blank"),
        pytest.param(("-",), "\n", id="blank-stdin"),
    ],
)
def test_submit_refuses_a_missing_prompt(
    cli: CliRun, db_path: Path, args: tuple[str, ...], stdin: str | None
) -> None:
    """`submit` and `run` without a prompt (or only whitespace) exit 2 in one line and
    write nothing."""
    for command in ("submit", "run"):
        code, _, err = cli(command, "shell", *args, input=stdin)
        assert code == 2
        assert err == (
            "tasktrail: error: give a prompt (or - to read it from standard input), or an --input\n"
        )
        assert not db_path.exists()


def test_submit_refuses_an_unknown_agent(cli: CliRun, db_path: Path) -> None:
    """An agent no worker can run exits 2 naming the known agents; nothing is written."""
    code, _, err = cli("submit", "nope", "x")
    assert code == 2
    assert "unknown agent 'nope'; known: echo, shell" in err
    assert not db_path.exists()
    code, _, _ = cli("submit", "nope", "x", "--any-agent")
    assert code == 0


def test_submit_twice_with_one_id_exits_1(cli: CliRun) -> None:
    """A taken id is refused and the existing task is untouched."""
    assert cli("submit", "shell", "true", "--id", "same")[0] == 0
    code, _, err = cli("submit", "shell", "false", "--id", "same")
    assert code == 1
    assert "already exists" in err
    assert json.loads(cli("show", "same", "--json")[1])["prompt"] == "true"


def test_worker_runs_queued_tasks_until_idle(cli: CliRun) -> None:
    """`worker --exit-when-idle` runs every queued task, logs each step, then stops."""
    ok = cli("submit", "echo", "hello")[1].strip()
    bad = cli("submit", "shell", "echo oops >&2; exit 3")[1].strip()
    code, out, err = cli("worker", "--exit-when-idle", "-c", "2")
    assert code == 0, err
    assert f"{ok} [green]completed" not in out  # markup is rendered, not printed
    assert f"{ok} completed" in out
    assert f"{bad} failed" in out
    assert cli("logs", ok)[1] == "echo says: hello\n"
    bad_task = json.loads(cli("show", bad, "--json")[1])
    assert (bad_task["state"], bad_task["exit_code"]) == ("failed", 3)
    assert "no task left to run" in err


def test_worker_runs_only_the_agents_asked(cli: CliRun) -> None:
    """`worker --agent echo` leaves shell tasks pending; an unknown agent exits 2."""
    shell = cli("submit", "shell", "true")[1].strip()
    echo = cli("submit", "echo", "x")[1].strip()
    assert cli("worker", "--agent", "echo", "--exit-when-idle", "-q")[0] == 0
    assert json.loads(cli("show", echo, "--json")[1])["state"] == "completed"
    assert json.loads(cli("show", shell, "--json")[1])["state"] == "pending"
    code, _, err = cli("worker", "--agent", "ghost")
    assert code == 2
    assert "unknown agent(s) 'ghost'" in err


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param("exit 0", 0, id="completed"),
        pytest.param("exit 4", 4, id="exit-code"),
        pytest.param("kill -TERM $$", 128 + 15, id="signal"),
    ],
)
def test_run_exits_with_the_tasks_exit_code(cli: CliRun, command: str, expected: int) -> None:
    """`run` streams the output and exits with the command's own exit code."""
    code, out, _ = cli("run", "shell", f"echo before; {command}")
    assert code == expected
    assert out == "before\n"


def test_run_runs_only_its_own_task(cli: CliRun) -> None:
    """A foreground `run` leaves other queued tasks to the workers."""
    queued = cli("submit", "shell", "true")[1].strip()
    code, out, _ = cli("run", "echo", "mine", "--json")
    assert code == 0
    assert json.loads(out)["result"] == {"exit_code": 0}
    assert json.loads(cli("show", queued, "--json")[1])["state"] == "pending"


def test_run_timeout_fails_the_task(cli: CliRun) -> None:
    """`run --run-timeout` fails (never cancels) a task that runs too long; exit 1."""
    code, _, err = cli("run", "shell", "sleep 20", "--run-timeout", "0.3", "--id", "slow")
    assert code == 1
    task = json.loads(cli("show", "slow", "--json")[1])
    assert task["state"] == "failed"
    assert "run timeout" in task["error"]
    assert "slow failed" in err


# -- ls, show, logs, history, replay -------------------------------------------------------------


def test_ls_json_matches_the_api(cli: CliRun, populated: Path) -> None:
    """`ls --json` is the API's list, newest first, field for field, one per line."""
    code, out, _ = cli("ls", "--json")
    assert code == 0
    assert json_lines(out) == api(populated, lambda store: store.list_tasks(newest_first=True))
    assert [t["id"] for t in json_lines(out)] == ["broken", "done"]


def test_ls_filters(cli: CliRun, populated: Path) -> None:
    """`ls` filters by state (repeatable), agent, parent and limit."""
    child = cli("submit", "shell", "true", "--parent", "done", "--id", "kid")[1].strip()
    assert child == "kid"

    def ids(*args: str) -> list[str]:
        return [t["id"] for t in json_lines(cli("ls", "--json", *args)[1])]

    assert ids("--state", "failed") == ["broken"]
    assert ids("--state", "failed", "--state", "pending") == ["kid", "broken"]
    assert ids("--agent", "shell") == ["kid"]
    assert ids("--parent", "done") == ["kid"]
    assert ids("--limit", "1") == ["kid"]
    code, _, err = cli("ls", "--state", "bogus")
    assert code == 2
    assert "Traceback" not in err


def test_ls_table(cli: CliRun, populated: Path) -> None:
    """The human listing shows each task's id and state."""
    code, out, _ = cli("ls")
    assert code == 0
    assert "broken" in out and "failed" in out and "completed" in out


def test_show_and_history(cli: CliRun, populated: Path) -> None:
    """`show` prints the record; `history --json` prints one event per line."""
    code, out, _ = cli("show", "done", "--json")
    assert code == 0
    assert json.loads(out)["version"] == 4
    code, out, _ = cli("show", "done")
    assert code == 0 and "completed" in out
    code, out, _ = cli("history", "done", "--json")
    assert code == 0
    assert [e["type"] for e in json_lines(out)] == [
        "task.created",
        "task.claimed",
        "task.started",
        "task.completed",
    ]
    assert json_lines(out) == api(populated, lambda store: store.history("done"))
    code, out, _ = cli("history", "done")
    assert code == 0 and "task.claimed" in out


def test_logs_json_prints_output_events(cli: CliRun) -> None:
    """`logs --json` prints each output event; stderr text keeps its channel."""
    task_id = cli("submit", "shell", "echo out; echo err >&2")[1].strip()
    cli("worker", "--exit-when-idle", "-q")
    code, out, _ = cli("logs", task_id, "--json")
    assert code == 0
    chunks = {(e["payload"]["channel"], e["payload"]["text"]) for e in json_lines(out)}
    assert chunks == {("stdout", "out\n"), ("stderr", "err\n")}


def test_replay_step_by_step(cli: CliRun, populated: Path) -> None:
    """`replay --json` gives each event with the state it led to and what changed."""
    code, out, _ = cli("replay", "broken", "--json")
    assert code == 0
    steps = json_lines(out)
    assert [s["task"]["state"] for s in steps] == ["pending", "failed"]
    assert "error" in steps[-1]["changed"]
    code, out, _ = cli("replay", "broken")
    assert code == 0 and "task.failed" in out and "failed" in out


def test_replay_at_a_version_and_a_time(cli: CliRun, populated: Path) -> None:
    """`replay --at-version N` and `--at TIME` equal the API's state_at."""
    expected = api(populated, lambda store: store.state_at("done", version=2))
    history = api(populated, lambda store: store.history("done"))
    code, out, _ = cli("replay", "done", "--at-version", "2", "--json")
    assert (code, json.loads(out)) == (0, expected)
    assert isinstance(history, list)
    moment = str(history[1]["timestamp"])
    code, out, _ = cli("replay", "done", "--at", moment, "--json")
    assert code == 0
    assert json.loads(out)["version"] >= 2
    code, _, err = cli("replay", "done", "--at", "1970-01-01T00:00:00+00:00")
    assert code == 2 and "did not exist yet" in err
    code, _, err = cli("replay", "done", "--at", "yesterday")
    assert code == 2 and "ISO 8601" in err
    code, _, _ = cli("replay", "done", "--at", moment, "--at-version", "1")
    assert code == 2


# -- wait, cancel ------------------------------------------------------------------------------


def test_wait_exit_codes(cli: CliRun, populated: Path) -> None:
    """`wait`: 0 completed, 11 failed, 12 cancelled, 13 timeout, 3 unknown."""
    assert cli("wait", "done")[0] == 0
    code, out, err = cli("wait", "done", "broken")
    assert code == 11
    assert "done: completed" in out
    assert "failed" in err
    pending = cli("submit", "shell", "true")[1].strip()
    code, _, err = cli("wait", pending, "--timeout", "0.2")
    assert code == 13
    assert "did not finish within 0.2 s" in err
    assert cli("cancel", pending)[0] == 0
    assert cli("wait", pending)[0] == 12
    assert cli("wait", "ghost")[0] == 3


def test_cancel_pending_all_and_finished(cli: CliRun, populated: Path) -> None:
    """A pending task is cancelled at once; a finished one is left; --all cancels the rest."""
    first = cli("submit", "shell", "true")[1].strip()
    second = cli("submit", "shell", "true")[1].strip()
    code, out, _ = cli("cancel", first, "done")
    assert code == 0
    assert f"{first}: cancelled" in out
    assert "done: already completed, left as it is" in out
    code, out, _ = cli("cancel", "--all", "--json", "--yes")
    assert code == 0
    assert [(t["id"], t["state"]) for t in json_lines(out)] == [(second, "cancelled")]
    assert cli("cancel")[0] == 2
    assert cli("cancel", first, "--all")[0] == 2


def test_cancel_cascades_to_children(cli: CliRun) -> None:
    """Cancelling a parent cancels its children too."""
    cli("submit", "shell", "true", "--id", "parent")
    cli("submit", "shell", "true", "--id", "child", "--parent", "parent")
    assert cli("cancel", "parent")[0] == 0
    assert json.loads(cli("show", "child", "--json")[1])["state"] == "cancelled"


# -- stats, verify, rebuild, export --------------------------------------------------------------


def test_stats(cli: CliRun, populated: Path) -> None:
    """`stats --json` counts tasks per state and agent and names the oldest pending."""
    cli("submit", "shell", "true", "--id", "waiting")
    code, out, _ = cli("stats", "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["tasks"] == 3
    assert figures["states"] == {
        "pending": 1, "starting": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 0,
    }  # fmt: skip
    assert figures["agents"]["shell"] == {"pending": 1}
    assert figures["oldest_pending"]["id"] == "waiting"
    assert figures["finished_last_hour"] == 2
    code, out, _ = cli("stats")
    assert code == 0 and "oldest pending: waiting" in out


def test_verify_names_the_tampered_event(cli: CliRun, populated: Path) -> None:
    """`verify` exits 5 naming the edited event's sequence number."""
    code, out, _ = cli("verify")
    assert code == 0
    assert "chain ok: 6 events" in out
    with sqlite3.connect(populated) as raw:
        raw.execute("DROP TRIGGER events_append_only_update")
        raw.execute("UPDATE events SET data = replace(data, 'boom', 'bam!') WHERE seq = 6")
    code, _, err = cli("verify")
    assert code == 5
    assert "sequence 6" in err


def test_verify_reports_a_stale_projection_and_rebuild_repairs_it(
    cli: CliRun, populated: Path
) -> None:
    """A projection row edited by hand exits 10; `rebuild` makes verify pass again."""
    with sqlite3.connect(populated) as raw:
        raw.execute("UPDATE tasks SET record = replace(record, 'completed', 'running')")
    code, out, _ = cli("verify", "--json")
    assert code == 10
    assert json.loads(out)["projection_mismatches"] == ["done"]
    code, out, _ = cli("rebuild")
    assert (code, out.strip()) == (0, "rebuilt 2 task(s) from the log")
    assert cli("verify")[0] == 0


def test_export_since_sequence_and_time(cli: CliRun, populated: Path) -> None:
    """`export --since` takes a sequence number or a time."""
    out = cli("export", "--since", "4")[1]
    assert [e["sequence"] for e in json_lines(out)] == [5, 6]
    everything = json_lines(cli("export")[1])
    assert [e["sequence"] for e in everything] == list(range(1, 7))
    later = time.time() + 3600
    assert cli("export", "--since", str(later))[1] == ""
    assert len(json_lines(cli("export", "--since", "2000-01-01T00:00")[1])) == 6


# -- errors, database and config -----------------------------------------------------------------


def test_unknown_task_is_one_line_and_exit_3(cli: CliRun, populated: Path) -> None:
    """An unknown id prints one line on stderr and exits 3, no traceback."""
    code, out, err = cli("show", "nope")
    assert code == 3
    assert err.strip() == "tasktrail: error: no task with id 'nope'"
    assert "Traceback" not in out + err


@pytest.mark.parametrize("command", ["ls", "show x", "logs x", "verify", "stats", "wait x"])
def test_missing_database_is_a_clear_error(cli: CliRun, db_path: Path, command: str) -> None:
    """Reading commands report a missing database (exit 9) and never create it."""
    code, _, err = cli(*command.split())
    assert code == 9
    assert "no database at" in err
    assert not db_path.exists()


def test_corrupt_database_exit_6(cli: CliRun, db_path: Path) -> None:
    """A file that is not a database exits 6 with one line."""
    db_path.write_bytes(b"this is not sqlite" * 100)
    code, _, err = cli("ls")
    assert code == 6
    assert len(err.strip().splitlines()) == 1


def test_database_from_environment(
    cli: CliRun, populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db the database comes from $TASKTRAIL_DB."""
    monkeypatch.setenv("TASKTRAIL_DB", str(populated))
    code, out, _ = cli("ls", "--json", db=False)
    assert code == 0
    assert len(json_lines(out)) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[worker\n", "Expected ']'", id="bad-toml"),
        pytest.param("[worker]\nmax_runing = 3\n", "unknown field `max_runing`", id="typo"),
        pytest.param("[worker]\nmax_running = 0\n", "max_running must be >= 1", id="range"),
        pytest.param('[agents.x]\ncommand = ""\n', "agent 'x': the command is empty", id="empty"),
        pytest.param("[agents.x]\ncwd = '/'\n", "missing required field `command`", id="missing"),
    ],
)
def test_a_bad_config_exits_2_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    """A broken tasktrail.toml is one line on stderr with its path; exit 2."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = CliRunner().invoke(
        main, ["submit", "shell", "true", "--db", str(tmp_path / "x.db"), "--config", str(path)]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"tasktrail: error: {path}: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_is_found_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config, ./tasktrail.toml defines the agents."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKTRAIL_CONFIG", raising=False)
    (tmp_path / "tasktrail.toml").write_text('[agents.hello]\ncommand = "echo hello {prompt}"\n')
    result = CliRunner().invoke(main, ["run", "hello", "world", "-q"])
    assert (result.exit_code, result.stdout) == (0, "hello world\n")
    assert (tmp_path / "tasktrail.db").exists()


def test_a_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    """--config naming no file exits 2."""
    result = CliRunner().invoke(
        main, ["submit", "shell", "true", "--config", str(tmp_path / "none.toml")]
    )
    assert result.exit_code == 2
    assert "no such configuration file" in result.stderr


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_help_with_an_example(name: str) -> None:
    """`COMMAND --help` works and shows an example."""
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    assert f"tasktrail {name}" in result.stdout


def test_exit_codes_are_distinct_per_error_kind() -> None:
    """Every error kind in EXIT_CODES has its own code."""
    codes = [code for _, code in EXIT_CODES]
    assert len(codes) == len(set(codes))


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs that is remounted read-only (root ignores file modes)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_read_only_database_exits_7(cli: CliRun, read_only_dir: Path) -> None:
    """On a read-only file system, writing and reading commands say so in one line, exit 7."""
    db = read_only_dir / "tasks.db"
    code = cli("submit", "shell", "true", "--db", str(db), db=False)[0]
    assert code == 0
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_dir)], check=True)
    for command in (["submit", "shell", "true"], ["worker", "--exit-when-idle"], ["ls"]):
        code, _, err = cli(*command, "--db", str(db), db=False)
        assert code == 7, (command, err)
        assert "read-only" in err
        assert len(err.strip().splitlines()) == 1
    with sqlite3.connect(f"file:{db}?immutable=1", uri=True) as raw:  # nothing was lost
        assert raw.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_demo_in_process(tmp_path: Path) -> None:
    """`tasktrail demo`: a worker killed and recovered, nothing lost, the chain verified."""
    result = CliRunner().invoke(main, ["demo", "--keep", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "acknowledged events missing after the crash: 0" in result.stdout
    assert "verified" in result.stdout
    assert "tampered at sequence" in result.stdout
    with sqlite3.connect(tmp_path / "demo.db") as raw:
        states = dict(raw.execute("SELECT id, state FROM tasks"))
        requeued = raw.execute(
            "SELECT count(*) FROM events WHERE type = 'task.requeued' AND reason LIKE 'recovery:%'"
        ).fetchone()[0]
    assert states["task-01"] == "failed"
    assert states["task-02"] == "cancelled"
    assert set(states.values()) == {"completed", "failed", "cancelled"}
    assert requeued >= 2
