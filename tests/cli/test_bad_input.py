"""Bad input to the command line: settings out of range, an empty or foreign --db, an
unreachable server, a user without permission. Each ends with one line and its exit code."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from helpers import unprivileged
from tasktrail.cli import main


def one_line(result: Result) -> str:
    """The only line on stderr (no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("[worker]\npoll_interval = nan\n", "worker.poll_interval", id="nan-poll"),
        pytest.param("[worker]\nlease_timeout = inf\n", "worker.lease_timeout", id="inf-lease"),
        pytest.param("[worker]\ncancel_grace = -inf\n", "worker.cancel_grace", id="neg-inf-grace"),
        pytest.param("[worker]\ntask_ttl = nan\n", "worker.task_ttl", id="nan-ttl"),
        pytest.param("[worker]\nrun_timeout = 1e308\n", "worker.run_timeout", id="huge-timeout"),
        pytest.param("[worker]\nlease_timeout = 0\n", "worker.lease_timeout", id="zero-lease"),
        pytest.param(
            "[worker]\nmax_running = 99999999999999999999\n", "worker.max_running", id="huge-int"
        ),
        pytest.param("[worker]\nmax_running = 10001\n", "worker.max_running", id="over-bound"),
        pytest.param("[worker]\nmax_attempts = -3\n", "worker.max_attempts", id="neg-attempts"),
        pytest.param("[limits]\nclaude = 99999999999\n", "limits.claude", id="huge-limit"),
        pytest.param(
            '[agents.x]\ncommand = "true"\ngrace = nan\n', "agents.x.grace", id="nan-agent-grace"
        ),
    ],
)
def test_a_setting_out_of_range_exits_2_naming_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """NaN, infinite, negative or absurdly large settings: one line naming file and key."""
    path = tmp_path / "tasktrail.toml"
    path.write_text(text)
    result = CliRunner().invoke(
        main, ["submit", "shell", "true", "--db", str(tmp_path / "x.db"), "--config", str(path)]
    )
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith(f"tasktrail: error: {path}: {key} must be ")
    assert not (tmp_path / "x.db").exists()


def test_the_documented_bounds_are_accepted(tmp_path: Path) -> None:
    """Every setting at its documented upper bound is accepted."""
    path = tmp_path / "tasktrail.toml"
    path.write_text(
        "[worker]\nmax_running = 10000\nmax_attempts = 1000\npoll_interval = 3600\n"
        "lease_timeout = 86400\ncancel_grace = 86400\nretry_backoff = 86400\n"
        "task_ttl = 315360000\nrun_timeout = 315360000\nqueue_timeout = 315360000\n"
        "[limits]\nclaude = 10000\n"
    )
    result = CliRunner().invoke(
        main, ["submit", "shell", "true", "--db", str(tmp_path / "x.db"), "--config", str(path)]
    )
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("command", [["ls"], ["submit", "shell", "true"], ["verify"]])
def test_an_empty_db_option_is_refused(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--db '' exits 2 with one line; ./tasktrail.db is not created."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*command, "--db", ""])
    assert result.exit_code == 2
    assert one_line(result) == (
        "tasktrail: error: --db is empty: pass a database file or a postgresql:// URL"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_empty_tasktrail_db_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TASKTRAIL_DB='' exits 2 with one line; ./tasktrail.db is not created."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["submit", "shell", "true"], env={"TASKTRAIL_DB": ""})
    assert result.exit_code == 2
    assert "TASKTRAIL_DB is set but empty" in one_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_mysql_url_is_refused_not_taken_for_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--db mysql://... exits 2 naming the supported schemes; no ./mysql: directory."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["submit", "shell", "true", "--db", "mysql://u:pw@h/db"])
    assert result.exit_code == 2
    line = one_line(result)
    assert "unsupported database URL 'mysql://u:***@h/db'" in line
    assert "postgresql://" in line
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_postgres_server_is_one_line_naming_host_and_port() -> None:
    """An unreachable server: exit 9, one line naming host:port and the redacted URL."""
    result = CliRunner().invoke(main, ["ls", "--db", "postgresql://app:pw@127.0.0.1:9/tasks"])
    assert result.exit_code == 9
    line = one_line(result)
    assert line.startswith("tasktrail: error: cannot connect to PostgreSQL at 127.0.0.1:9 ")
    assert "connection refused" in line and ":pw@" not in line


@pytest.fixture
def root_owned() -> Iterator[Path]:
    """A directory of the user running the tests that nobody else (and, unless root, not
    that user either) may write to; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="tasktrail-perm-"))
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o700)
        shutil.rmtree(directory)


def test_a_user_without_permission_is_told_permission_denied(root_owned: Path) -> None:
    """`submit --db` in a directory the user may not write: exit 9, 'permission denied'."""
    path = root_owned / "tasks.db"

    def submit() -> str:
        result = CliRunner().invoke(
            main, ["submit", "shell", "true", "--db", str(path)], env={"TASKTRAIL_CONFIG": None}
        )
        return f"{result.exit_code} {one_line(result)}"

    answer = unprivileged(submit)
    assert answer.startswith(f"9 tasktrail: error: cannot create the database {path}: "), answer
    assert "permission denied: user " in answer and f"may not write to {root_owned}" in answer
    assert not path.exists()


def test_a_config_directory_the_user_may_not_search_is_a_config_error(root_owned: Path) -> None:
    """A user config directory this user may not look into: exit 2 naming it, no traceback."""
    root_owned.chmod(0o000)
    home = root_owned / "config"

    def submit() -> str:
        result = CliRunner().invoke(
            main,
            ["submit", "shell", "true", "--db", "/nonexistent/x.db"],
            env={"XDG_CONFIG_HOME": str(home), "TASKTRAIL_CONFIG": None},
        )
        return f"{result.exit_code} {one_line(result)}"

    answer = unprivileged(submit)
    assert answer.startswith(f"2 tasktrail: error: {home}/tasktrail/tasktrail.toml: "), answer
    assert "permission denied" in answer
