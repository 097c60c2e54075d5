"""The main command-line flows as real processes: worker, submit, cancel, kill -9, restart."""

from __future__ import annotations

import getpass
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import json_lines

CONFIG = """
[worker]
poll_interval = 0.1
cancel_grace = 1.0
lease_timeout = 5.0
max_attempts = 2
"""


class Cli:
    """Runs ``python -m tasktrail`` as a subprocess on one database and config."""

    def __init__(self, db: Path | str, config: Path) -> None:
        self.db = db
        self.config = config
        self.env = {**os.environ, "TASKTRAIL_DB": str(db), "TASKTRAIL_CONFIG": str(config)}
        self.started: list[subprocess.Popen[str]] = []

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one command to its end."""
        return subprocess.run(
            [sys.executable, "-m", "tasktrail", *args],
            capture_output=True, text=True, timeout=timeout, env=self.env, check=False,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start a long-running command (a worker)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tasktrail", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        self.started.append(process)
        return process

    def task(self, task_id: str) -> dict[str, object]:
        """The task's record, from `show --json`."""
        shown = self("show", task_id, "--json")
        assert shown.returncode == 0, shown.stderr
        record: dict[str, object] = json.loads(shown.stdout)
        return record

    def until(self, task_id: str, *states: str, timeout: float = 30) -> dict[str, object]:
        """Poll `show` until the task is in one of ``states``."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.task(task_id)
            if record["state"] in states:
                return record
            assert time.monotonic() < deadline, f"{task_id} stuck in {record['state']}"
            time.sleep(0.1)

    def until_output(self, task_id: str, text: str, timeout: float = 30) -> None:
        """Poll `logs` until the task's output is ``text``."""
        deadline = time.monotonic() + timeout
        while (shown := self("logs", task_id).stdout) != text:
            assert time.monotonic() < deadline, f"{task_id} printed {shown!r}, not {text!r}"
            time.sleep(0.1)


@pytest.fixture
def cli(tmp_path: Path, database: str) -> Iterator[Cli]:
    """A CLI on a fresh database of each backend (SQLite file, PostgreSQL URL); every worker
    it started is gone afterwards."""
    config = tmp_path / "tasktrail.toml"
    config.write_text(CONFIG)
    runner = Cli(database, config)
    yield runner
    for process in runner.started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def stop(worker: subprocess.Popen[str]) -> tuple[int, str, str]:
    """SIGTERM a worker and collect what it printed."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    return worker.returncode, out, err


def test_submit_cancel_kill_restart_history_verify(cli: Cli, tmp_path: Path) -> None:
    """Submit from one process while a worker runs in another, cancel from a third, SIGKILL
    the worker, start another: every step is in the history and verify passes."""
    go = tmp_path / "go"  # the doomed task runs until the test creates it: never too soon
    doomed_command = f"echo attempt $TASKTRAIL_ATTEMPT; until [ -e '{go}' ]; do sleep 0.05; done"
    first = cli.start("worker", "--worker-id", "w1", "-c", "3")
    try:
        quick = cli("submit", "shell", "echo quick").stdout.strip()
        slow = cli("submit", "shell", "echo started; sleep 60").stdout.strip()
        doomed = cli("submit", "shell", doomed_command).stdout.strip()
        assert cli.until(quick, "completed")["worker_id"] == "w1"
        cli.until(slow, "running")
        cli.until(doomed, "running")
        cli.until_output(doomed, "attempt 1\n")  # written before the worker dies
        cancelled = cli("cancel", slow, "--wait")
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"{slow}: cancelled" in cancelled.stdout
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert cli.task(doomed)["state"] == "running"  # left behind by the dead worker
    go.touch()
    second = cli.start("worker", "--worker-id", "w2", "--exit-when-idle")
    code, out, _ = stop_when_done(second)
    assert code == 0
    record = cli.until(doomed, "completed")
    assert (record["worker_id"], record["attempt"]) == ("w2", 2)
    assert f"{doomed} completed" in out
    assert f"{doomed} re-queued (recovery: worker w1" in out

    steps = json_lines(cli("history", doomed, "--json").stdout)
    lifecycle = [(e["type"], e["actor"]) for e in steps if e["type"] != "task.output"]
    assert lifecycle == [
        ("task.created", f"user:{getpass.getuser()}"),
        ("task.claimed", "w1"),
        ("task.started", "w1"),
        ("task.requeued", "system"),
        ("task.claimed", "w2"),
        ("task.started", "w2"),
        ("task.completed", "w2"),
    ]
    requeue = next(e for e in steps if e["type"] == "task.requeued")
    assert "worker w1" in requeue["reason"] and "is gone" in requeue["reason"]
    assert cli("logs", doomed).stdout == "attempt 1\nattempt 2\n"
    cancel_steps = [e["type"] for e in json_lines(cli("history", slow, "--json").stdout)]
    assert cancel_steps[-2:] == ["task.cancel_requested", "task.cancelled"]

    verified = cli("verify")
    assert verified.returncode == 0, verified.stderr
    assert "projection ok" in verified.stdout


def stop_when_done(worker: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for a worker started with --exit-when-idle."""
    out, err = worker.communicate(timeout=60)
    return worker.returncode, out, err


def test_sigterm_requeues_running_tasks(cli: Cli) -> None:
    """A worker stopped with SIGTERM ends its processes and re-queues them, never running."""
    worker = cli.start("worker", "--worker-id", "w1")
    task_id = cli("submit", "shell", "sleep 60").stdout.strip()
    cli.until(task_id, "running")
    code, out, err = stop(worker)
    assert code == 0
    assert "SIGTERM: stopping" in err
    record = cli.task(task_id)
    assert record["state"] == "pending"
    assert "shutting down" in str(record["reason"])
    assert f"{task_id} re-queued" in out
    history = [e["type"] for e in json_lines(cli("history", task_id, "--json").stdout)]
    assert history[-1] == "task.requeued"


def test_run_in_the_foreground_streams_and_exits_with_the_code(cli: Cli) -> None:
    """`tasktrail run` prints the command's output as it comes and exits with its code."""
    done = cli("run", "shell", "echo one; echo two >&2; exit 5", "--max-attempts", "1")
    assert done.returncode == 5
    assert done.stdout == "one\n"
    assert "two\n" in done.stderr


def test_run_ctrl_c_cancels_the_task(cli: Cli) -> None:
    """SIGINT to `tasktrail run` cancels its task: exit 130, the task is cancelled."""
    proc = cli.start("run", "shell", "echo ready; sleep 60", "--id", "fg")
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "cancelling" in err
    record = cli.task("fg")
    assert record["state"] == "cancelled"


def test_logs_follow_from_another_process(cli: Cli) -> None:
    """`logs --follow` prints output written by a worker in another process until the end."""
    worker = cli.start("worker")
    try:
        task_id = cli("submit", "shell", "for i in 1 2 3; do echo line $i; sleep 0.2; done")
        followed = cli("logs", task_id.stdout.strip(), "--follow")
        assert followed.stdout == "line 1\nline 2\nline 3\n"
    finally:
        stop(worker)


def test_version_and_help() -> None:
    """`--version` and `--help` work as a real process, with no database."""
    done = subprocess.run(
        [sys.executable, "-m", "tasktrail", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for command in ("submit", "worker", "run", "logs", "replay", "stats", "demo"):
        assert command in done.stdout


def read_terminal(terminal: int, until: Callable[[bytes], bool], timeout: float = 60) -> bytes:
    """What a process wrote to the terminal, read until ``until(text)`` or its end (EIO)."""
    text = b""
    deadline = time.monotonic() + timeout
    while not until(text) and time.monotonic() < deadline:
        if select.select([terminal], [], [], 0.5)[0]:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            text += chunk
    return text


def test_ls_watch_redraws_until_sigterm(cli: Cli) -> None:
    """`ls --watch` draws the table, redraws it when a task changes, and ends cleanly
    (exit 0) on SIGTERM."""
    cli("submit", "shell", "true", "--id", "watched")
    terminal, screen = pty.openpty()  # on a terminal, each redraw is written at once
    watcher = subprocess.Popen(
        [sys.executable, "-m", "tasktrail", "ls", "--watch"],
        stdout=screen, stderr=subprocess.PIPE, env={**cli.env, "TERM": "xterm"},
    )  # fmt: skip
    os.close(screen)
    try:
        shown = read_terminal(terminal, until=lambda text: b"watched" in text)
        assert b"watched" in shown, shown  # drawn
        cli("submit", "shell", "true", "--id", "arrived")
        shown = read_terminal(terminal, until=lambda text: b"arrived" in text)
        assert b"arrived" in shown, shown  # redrawn with the new task
        watcher.send_signal(signal.SIGTERM)
        read_terminal(terminal, until=lambda _: False)  # to the end: never let it block
        _, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
        os.close(terminal)
    assert watcher.returncode == 0, err


def test_shell_completion_offers_task_ids(cli: Cli) -> None:
    """Completing a task id argument lists the database's task ids that match."""
    cli("submit", "shell", "true", "--id", "alpha-1")
    cli("submit", "shell", "true", "--id", "beta-1")
    env = {**cli.env, "COMP_WORDS": "tasktrail show al", "COMP_CWORD": "2"}
    env["_TASKTRAIL_COMPLETE"] = "bash_complete"
    script = Path(sys.executable).parent / "tasktrail"  # the installed console script
    done = subprocess.run([script], env=env, capture_output=True, text=True, check=False)
    assert done.stdout.split() == ["plain,alpha-1"]


def group_runs(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def test_a_killed_workers_processes_end_before_the_retry(cli: Cli) -> None:
    """The processes of a worker killed with SIGKILL run on; the worker that recovers the
    task ends them before its next attempt, so two attempts never run side by side."""
    first = cli.start("worker", "--worker-id", "w1")
    task_id = cli("submit", "shell", "sleep 60", "--max-attempts", "2").stdout.strip()
    record = cli.until(task_id, "running")
    pgid = int(str(record["session_id"]).removeprefix("pid:"))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert group_runs(pgid)  # orphaned: nobody will end it
    cli.start("worker", "--worker-id", "w2")
    retried = cli.until(task_id, "running")
    while retried["attempt"] != 2:
        retried = cli.until(task_id, "running")
    assert not group_runs(pgid)
    assert cli("cancel", task_id, "--force").returncode == 0
