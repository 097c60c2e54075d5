"""`tasktrail worker --app`: a real worker process serving Python runners from the user's
module beside the config's command agents; bad --app values; the audit of CLI writes."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

MODULE = """
import tasktrail

tasks = tasktrail.Registry()


@tasks.agent("resize")
async def resize(ctx):
    await ctx.write(f"resizing {ctx.input['image']}\\n")
    return {"sizes": [s * 2 for s in ctx.input["sizes"]]}


@tasks.agent()
def count_words(ctx):
    return len(ctx.task.prompt.split())
"""

CONFIG = """
[worker]
poll_interval = 0.1

[agents.echo_input]
command = ["/bin/echo", "input is {input}"]

[agents.read_stdin]
command = ["/bin/cat"]
stdin = "input"
"""


class Project:
    """A project directory with a module of runners and a tasktrail.toml; runs the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "myjobs.py").write_text(MODULE)
        (root / "tasktrail.toml").write_text(CONFIG)
        self.env = {**os.environ, "TASKTRAIL_DB": str(root / "tasks.db")}
        self.env.pop("TASKTRAIL_ACTOR", None)
        self.processes: list[subprocess.Popen[str]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tasktrail", *args], cwd=self.root, env=self.env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasktrail", *args], cwd=self.root, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def show(self, task_id: str) -> dict[str, Any]:
        shown = self("show", task_id, "--json")
        assert shown.returncode == 0, shown.stderr
        record: dict[str, Any] = json.loads(shown.stdout)
        return record

    def wait(self, task_id: str) -> dict[str, Any]:
        done = self("wait", task_id, "--timeout", "60", "--json")
        assert done.returncode in (0, 11, 12), done.stderr
        record: dict[str, Any] = json.loads(done.stdout)
        return record


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A fresh project; every process it started is ended afterwards."""
    made = Project(tmp_path)
    yield made
    for process in made.processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_a_worker_serves_python_runners_and_command_agents_together(project: Project) -> None:
    """--app module:registry serves the module's agents beside the config's commands."""
    ids = {
        "resize": project(
            "submit",
            "resize",
            "--app",
            "myjobs:tasks",
            "--input",
            '{"image": "a.png", "sizes": [1, 2]}',
        ),
        "count": project("submit", "count_words", "three small words", "--app", "myjobs:tasks"),
        "echo": project("submit", "echo_input", "--input", '{"k": [1, 2]}'),
        "stdin": project("submit", "read_stdin", "--input", '{"from": "stdin"}'),
    }
    for submitted in ids.values():
        assert submitted.returncode == 0, submitted.stderr
    worker = project.start("worker", "--app", "myjobs:tasks", "--exit-when-idle")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    resize = project.show(ids["resize"].stdout.strip())
    assert (resize["state"], resize["result"]) == ("completed", {"sizes": [2, 4]})
    assert resize["input"] == {"image": "a.png", "sizes": [1, 2]}
    assert project.show(ids["count"].stdout.strip())["result"] == 3
    echo = project("logs", ids["echo"].stdout.strip())
    assert echo.stdout == 'input is {"k":[1,2]}\n'
    assert project("logs", ids["stdin"].stdout.strip()).stdout == '{"from":"stdin"}'


def test_the_worker_logs_json_lines_when_asked(project: Project) -> None:
    """--log-format json writes one JSON object per log record on stderr."""
    task = project("submit", "shell", "exit 3", "--max-attempts", "1").stdout.strip()
    worker = project.start("worker", "--log-format", "json", "--exit-when-idle")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records, err
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("tasktrail") for r in records)
    assert project.show(task)["state"] == "failed"


@pytest.mark.parametrize(
    ("spec", "module", "message"),
    [
        pytest.param("nomodule:tasks", None, "no module named 'nomodule'", id="no-module"),
        pytest.param(
            "bad:tasks", "raise RuntimeError('broken import')", "RuntimeError", id="raises"
        ),
        pytest.param("bad:missing", "x = 1", "has no attribute 'missing'", id="no-attribute"),
        pytest.param("bad:x", "x = 1", "not a tasktrail.Registry", id="not-a-registry"),
        pytest.param("bad", "x = 1", "MODULE:OBJECT", id="no-colon"),
    ],
)
def test_a_bad_app_is_one_line_and_exit_2(
    project: Project, spec: str, module: str | None, message: str
) -> None:
    """--app naming no usable registry: one line naming the problem, exit 2, no traceback."""
    if module is not None:
        (project.root / "bad.py").write_text(module + "\n")
    result = project("worker", "--app", spec, "--exit-when-idle")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_writes_record_who_and_why(project: Project) -> None:
    """submit, cancel and rerun record actor user:<login> and the --reason given."""
    task = project("submit", "nobody", "hi", "--any-agent", "--reason", "nightly").stdout.strip()
    cancelled = project("cancel", task, "--reason", "wrong branch")
    assert cancelled.returncode == 0, cancelled.stderr
    copy = project("rerun", task, "--reason", "right branch")
    assert copy.returncode == 0, copy.stderr
    new = copy.stdout.strip()
    history = [json.loads(line) for line in project("history", task, "--json").stdout.splitlines()]
    login = f"user:{getpass.getuser()}"
    assert (history[0]["actor"], history[0]["reason"]) == (login, "nightly")
    assert (history[-1]["type"], history[-1]["actor"], history[-1]["reason"]) == (
        "task.cancelled", login, "wrong branch",
    )  # fmt: skip
    assert project.show(new)["rerun_of"] == task
    shown = project("show", task)
    assert f"reruns: {new}" in shown.stdout


def test_no_worker_serves_an_agent_is_said_not_hidden(project: Project) -> None:
    """ls, show and stats name the agent of pending tasks that no live worker serves."""
    task = project("submit", "ghost-agent", "--any-agent", "hello").stdout.strip()
    for args in (("ls",), ("show", task), ("stats",)):
        result = project(*args)
        assert result.returncode == 0, result.stderr
        assert "no worker serves agent ghost-agent" in " ".join(result.stdout.split()), args
    stats = json.loads(project("stats", "--json").stdout)
    assert stats["unserved_agents"] == ["ghost-agent"]


def test_submit_in_and_at_schedule_the_start(project: Project) -> None:
    """--in delays a task's start; --at takes a time; both are recorded as not_before."""
    before = time.time()
    later = project.show(project("submit", "shell", "true", "--in", "2h").stdout.strip())
    assert datetime.fromisoformat(later["not_before"]).timestamp() >= before + 7200
    at = project.show(
        project("submit", "shell", "true", "--at", "2099-01-01T00:00:00Z").stdout.strip()
    )
    assert at["not_before"] == "2099-01-01T00:00:00Z"
    both = project("submit", "shell", "true", "--in", "1m", "--at", "12:00")
    assert both.returncode == 2
    assert "not both" in both.stderr
