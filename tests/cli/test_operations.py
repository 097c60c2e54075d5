"""Operations from the command line: pause and resume in every worker, cancel by filter,
why a waited-for task does not start, progress bars on a terminal, Prometheus metrics,
and the old option names kept for one release."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from helpers import json_lines
from tasktrail import NewEvent, OutputAppended, SQLiteEventStore, TaskClaimed, TaskCreated
from tasktrail.cli import main

CONFIG = """
[worker]
poll_interval = 0.1
lease_timeout = 5.0

[agents.echo]
command = ["/bin/echo", "echo says: {prompt}"]
"""


class Cli:
    """``python -m tasktrail`` as subprocesses on one database and config."""

    def __init__(self, root: Path) -> None:
        (root / "tasktrail.toml").write_text(CONFIG)
        self.db = root / "tasks.db"
        self.env = {
            **os.environ,
            "TASKTRAIL_DB": str(self.db),
            "TASKTRAIL_CONFIG": str(root / "tasktrail.toml"),
            "TASKTRAIL_ACTOR": "user:ops",
        }
        self.started: list[subprocess.Popen[str]] = []

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tasktrail", *args], input=stdin,
            capture_output=True, text=True, env=self.env, timeout=120, check=False,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasktrail", *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        self.started.append(process)
        return process

    def state(self, task_id: str) -> str:
        shown = self("show", task_id, "--json")
        assert shown.returncode == 0, shown.stderr
        return str(json.loads(shown.stdout)["state"])

    def until(self, task_id: str, *states: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.state(task_id)) not in states:
            assert time.monotonic() < deadline, f"{task_id} stuck in {state}"
            time.sleep(0.1)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The CLI on a fresh database; every process it started is stopped at the end."""
    runner = Cli(tmp_path)
    yield runner
    for process in runner.started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)  # also closes its pipes
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def read_until(stream: object, found: Callable[[str], bool], timeout: float = 60) -> str:
    """Lines of a process's pipe, read until ``found(text)`` or the deadline."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    text = ""
    deadline = time.monotonic() + timeout
    while not found(text) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            text += chunk
    return text


# -- pause and resume ----------------------------------------------------------------------------


def test_a_pause_holds_an_agent_in_every_worker_until_resumed(cli: Cli) -> None:
    """A running worker starts none of a paused agent's tasks (the rest of the queue runs);
    stats and ls show the pause with who and why; after resume the worker runs it."""
    worker = cli.start("worker", "--worker-id", "w1")
    assert "Ctrl-C stops it" in read_until(worker.stderr, lambda text: "Ctrl-C" in text)
    paused = cli("pause", "--agent", "shell", "--reason", "maintenance")
    assert paused.returncode == 0, paused.stderr
    assert "paused agent shell" in paused.stdout
    held = cli("submit", "shell", "echo held").stdout.strip()
    free = cli("submit", "echo", "free").stdout.strip()  # queued after the held one
    cli.until(free, "completed")  # FIFO: a worker ignoring the pause took `held` first
    assert cli.state(held) == "pending"
    stats = cli("stats")
    assert "agent shell is paused (by user:ops" in stats.stdout
    assert "maintenance" in stats.stdout
    assert "tasktrail resume --agent shell" in " ".join(cli("ls").stdout.split())
    figures = json.loads(cli("stats", "--json").stdout)
    assert [(p["kind"], p["target"], p["actor"]) for p in figures["paused"]] == [
        ("agent", "shell", "user:ops")
    ]
    assert cli("resume", "--agent", "shell").returncode == 0
    cli.until(held, "completed")
    assert worker.poll() is None


def test_a_paused_key_and_an_idle_worker(cli: Cli) -> None:
    """`worker --exit-when-idle` stops when only paused tasks are left; pausing twice says
    so; resuming what is not paused says so; the control log has every step."""
    task = cli("submit", "shell", "true", "--key", "gpu").stdout.strip()
    assert cli("pause", "--key", "gpu").returncode == 0
    again = cli("pause", "--key", "gpu", "--json")
    assert json.loads(again.stdout)["target"] == "gpu"
    assert "already: key gpu is paused" in cli("pause", "--key", "gpu").stdout
    idle = cli("worker", "--exit-when-idle", "-q")
    assert idle.returncode == 0, idle.stderr
    assert cli.state(task) == "pending"
    assert "was not paused" in cli("resume", "--agent", "gpu").stdout
    assert cli("resume", "--key", "gpu", "--reason", "back").returncode == 0
    assert cli("worker", "--exit-when-idle", "-q").returncode == 0
    assert cli.state(task) == "completed"
    bad = cli("pause", "--agent", "x", "--key", "y")
    assert bad.returncode == 2 and "one of them" in bad.stderr


# -- why a task waits ----------------------------------------------------------------------------


def test_wait_says_when_no_worker_serves_the_agent(cli: Cli) -> None:
    """`wait` on a task no live worker can run says so on stderr after a few seconds."""
    task = cli("submit", "echo", "hi").stdout.strip()
    waiter = cli.start("wait", task)
    said = read_until(waiter.stderr, lambda text: "no worker serves agent echo" in text)
    assert "no worker serves agent echo" in said
    assert waiter.poll() is None  # still waiting
    assert cli("worker", "--exit-when-idle", "-q").returncode == 0
    assert waiter.wait(timeout=60) == 0


def test_logs_follow_says_when_the_agent_is_paused(cli: Cli) -> None:
    """`logs --follow` of a task held by a pause says which pause, and how to resume."""
    worker = cli.start("worker", "--worker-id", "w1")
    assert "Ctrl-C stops it" in read_until(worker.stderr, lambda text: "Ctrl-C" in text)
    cli("pause", "--agent", "echo", "--reason", "quota")
    task = cli("submit", "echo", "hi").stdout.strip()
    follower = cli.start("logs", task, "--follow")
    said = read_until(follower.stderr, lambda text: "tasktrail resume --agent echo" in text)
    assert "agent echo is paused (by user:ops" in said and "quota" in said
    cli("resume", "--agent", "echo")
    out, _ = follower.communicate(timeout=60)
    assert out == "echo says: hi\n"
    assert worker.poll() is None


# -- cancel by filter ---------------------------------------------------------------------------


async def _old_and_new(path: Path) -> None:
    ticks = itertools.count()
    old = time.time() - 3 * 3600
    async with SQLiteEventStore(path, clock=lambda: old + next(ticks)) as store:
        for task_id, agent in (("old-a", "a"), ("old-b", "b")):
            await store.append(task_id, [NewEvent(TaskCreated(agent=agent))])
    async with SQLiteEventStore(path) as store:
        for task_id, agent in (("new-a", "a"), ("new-b", "b")):
            await store.append(task_id, [NewEvent(TaskCreated(agent=agent))])


def _cancel(db: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["cancel", "--db", str(db), *args])
    return result.exit_code, result.stdout, result.stderr


def test_cancel_by_filter_asks_or_takes_yes(db_path: Path) -> None:
    """--agent, --state and --older-than select unfinished tasks; without a terminal to
    ask on, --yes is required; --all takes no other filter."""
    asyncio.run(_old_and_new(db_path))
    code, _, err = _cancel(db_path, "--agent", "a")
    assert code == 2 and "this would cancel 2 unfinished task(s)" in err and "--yes" in err
    code, out, _ = _cancel(db_path, "--agent", "a", "--older-than", "2h", "--yes")
    assert (code, out) == (0, "old-a: cancelled\n")
    code, out, _ = _cancel(db_path, "--state", "pending", "--agent", "b", "--yes", "--json")
    assert [t["id"] for t in json_lines(out)] == ["old-b", "new-b"]
    code, _, err = _cancel(db_path, "--all", "--agent", "a")
    assert code == 2 and "--all selects every unfinished task" in err
    code, _, err = _cancel(db_path, "new-a", "--agent", "a")
    assert code == 2
    code, out, _ = _cancel(db_path, "--all", "--yes")
    assert out == "new-a: cancelled\n"
    code, _, err = _cancel(db_path, "--all", "--yes")
    assert (code, err) == (0, "no unfinished task matches\n")


@pytest.mark.parametrize(("answer", "cancelled"), [("y", True), ("n", False)])
def test_cancel_by_filter_confirms_on_a_terminal(
    db_path: Path, answer: str, cancelled: bool
) -> None:
    """On a terminal the bulk cancel asks first; only a yes cancels."""
    asyncio.run(_old_and_new(db_path))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "tasktrail", "cancel", "--db", str(db_path), "--agent", "b"],
        stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, text=True,
    )  # fmt: skip
    os.close(terminal)
    try:
        asked = b""
        deadline = time.monotonic() + 60
        while b"Cancel 2 unfinished task(s)" not in asked and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                asked += os.read(controller, 4096)
        assert b"[y/N]" in asked
        os.write(controller, f"{answer}\n".encode())
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(controller)
    assert (process.returncode == 0) == cancelled
    assert ("old-b: cancelled" in out) == cancelled


# -- progress -----------------------------------------------------------------------------------


def _on_a_terminal(args: list[str]) -> tuple[int, str, bytes]:
    """Run with stderr on a terminal; (exit code, stdout, what the terminal showed)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "tasktrail", *args], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=terminal, env={**os.environ, "TERM": "xterm"},
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    try:
        while True:
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # every writer closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
    return process.returncode, out.decode(), shown


@pytest.fixture
def log120(db_path: Path) -> Path:
    """A database of 40 tasks, 120 events."""

    async def fill() -> None:
        async with SQLiteEventStore(db_path) as store:
            for n in range(40):
                await store.append(
                    f"t{n}",
                    [
                        NewEvent(TaskCreated(agent="a")),
                        NewEvent(TaskClaimed(worker_id="w", attempt=1)),
                        NewEvent(OutputAppended(text="x")),
                    ],
                )

    asyncio.run(fill())
    return db_path


@pytest.mark.parametrize(
    ("command", "label"),
    [
        pytest.param(["verify"], "checking the hash chain", id="verify"),
        pytest.param(["rebuild"], "replaying the log", id="rebuild"),
        pytest.param(["export"], "exporting the log", id="export"),
    ],
)
def test_progress_on_a_terminal_with_count_and_rate(
    log120: Path, command: list[str], label: str
) -> None:
    """On a terminal, long commands draw a bar on stderr with the count and the rate;
    stdout holds only the result."""
    code, out, shown = _on_a_terminal([*command, "--db", str(log120)])
    assert code == 0
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", shown).decode(errors="replace")
    assert label in text
    assert "120/120 events" in text
    assert re.search(r"[\d,]+ events/s", text), text
    assert label not in out


@pytest.mark.parametrize("command", ["verify", "rebuild", "export"])
def test_no_progress_when_piped(log120: Path, command: str) -> None:
    """Piped (CI logs), nothing but the result: stderr stays empty."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}  # no debug notes
    done = subprocess.run(
        [sys.executable, "-m", "tasktrail", command, "--db", str(log120)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stderr == ""


# -- Prometheus ---------------------------------------------------------------------------------


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_stats_prometheus_parses_and_counts(cli: Cli) -> None:
    """`stats --prometheus` is valid exposition text: tasks per agent and state, the log's
    length, the pauses in force."""
    cli("submit", "shell", "true")
    cli("submit", "echo", "x")
    cli("pause", "--agent", "echo")
    text = cli("stats", "--prometheus").stdout
    families = _families(text)
    assert {"tasktrail_tasks", "tasktrail_events", "tasktrail_paused"} <= set(families)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples  # type: ignore[attr-defined]
    }
    assert samples[("tasktrail_tasks", (("agent", "shell"), ("state", "pending")))] == 1
    assert samples[("tasktrail_tasks", (("agent", "echo"), ("state", "completed")))] == 0
    assert samples[("tasktrail_events_total", ())] == 2
    assert samples[("tasktrail_paused", (("kind", "agent"), ("target", "echo")))] == 1
    assert "# TYPE tasktrail_events_total counter" in text


def test_worker_serves_metrics(cli: Cli) -> None:
    """`worker --metrics-port 0` serves /metrics: the database's gauges, its claims, its
    finished tasks with their run time, its commit latency; other paths are 404."""
    worker = cli.start("worker", "--worker-id", "w1", "--metrics-port", "0")
    said = read_until(worker.stderr, lambda text: "/metrics" in text)
    url = re.search(r"http://127\.0\.0\.1:\d+/metrics", said)
    assert url is not None, said
    task = cli("submit", "echo", "hi").stdout.strip()
    cli.until(task, "completed")
    finished = (
        "tasktrail_worker_tasks_finished_total",
        (("agent", "echo"), ("state", "completed"), ("worker_id", "w1")),
    )
    deadline = time.monotonic() + 60
    while True:  # the worker counts from the log it follows: wait until it saw the end
        with urllib.request.urlopen(url[0], timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        if samples.get(finished) == 1:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert samples[("tasktrail_worker_claims_total", (("worker_id", "w1"),))] == 1
    assert samples[("tasktrail_worker_claims_lost_total", (("worker_id", "w1"),))] == 0
    assert samples[("tasktrail_worker_task_run_seconds_count",
                    (("agent", "echo"), ("worker_id", "w1")))] == 1  # fmt: skip
    assert samples[("tasktrail_store_commit_seconds_count", (("worker_id", "w1"),))] >= 2
    assert samples[("tasktrail_tasks", (("agent", "echo"), ("state", "completed")))] == 1
    assert samples[("tasktrail_workers_live", ())] == 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url[0].replace("/metrics", "/other"), timeout=30)
    missing.value.close()
    assert missing.value.code == 404


async def test_a_claim_taken_by_recovery_counts_as_lost(db_path: Path) -> None:
    """The worker's log follower counts a claim lost when recovery re-queued its task."""
    from tasktrail import TaskCompleted, TaskRequeued, TaskStarted
    from tasktrail.cli._worker import _Reporter

    async with SQLiteEventStore(db_path) as store:
        reporter = _Reporter("w1", 0, quiet=True)
        await store.append("t", [NewEvent(TaskCreated(agent="a"))])
        await store.append("t", [NewEvent(TaskClaimed(worker_id="w1", attempt=1), actor="w1")])
        await store.append("t", [NewEvent(TaskStarted(), actor="w1")])
        await store.append(
            "t", [NewEvent(TaskRequeued(), actor="w2", reason="recovery: lease expired")]
        )
        await store.append("t", [NewEvent(TaskClaimed(worker_id="w2", attempt=2), actor="w2")])
        await store.append("t", [NewEvent(TaskStarted(), actor="w2")])
        await store.append("t", [NewEvent(TaskCompleted(), actor="w2")])
        await reporter.catch_up(store)
    assert (reporter.counters.claims, reporter.counters.claims_lost) == (1, 1)
    assert reporter.counters.finished == {}  # another worker finished it


# -- old option names ---------------------------------------------------------------------------


def test_old_option_names_still_work_and_say_the_new_one(cli: Cli) -> None:
    """`worker --id`, `run --timeout` and `replay --version` work for one more release and
    name their new spelling on stderr; the new names work silently."""
    worker = cli("worker", "--id", "old-w", "--exit-when-idle", "-q")
    assert worker.returncode == 0
    assert "--id is now --worker-id" in worker.stderr
    run = cli("run", "shell", "sleep 30", "--timeout", "0.5", "-q", "--id", "slow")
    assert run.returncode == 1
    assert "--timeout is now --run-timeout" in run.stderr
    replay = cli("replay", "slow", "--version", "1", "--json")
    assert replay.returncode == 0 and json.loads(replay.stdout)["version"] == 1
    assert "--version is now --at-version" in replay.stderr
    quiet = cli("replay", "slow", "--at-version", "1")
    assert quiet.returncode == 0 and quiet.stderr == ""
    both = cli("replay", "slow", "--at-version", "1", "--version", "1")
    assert both.returncode == 2
