"""Scenario 9, one live attempt per task: real processes paused past their lease, clocks that
jump, a worker in another pid namespace, a busy database, a deleted write-ahead log.

The invariant checker cannot see these: the log stays well formed. What goes wrong is in
the world (two attempts of one task running at once) and in the states (a healthy worker
taken for dead, a worker dying on a busy database). Each test reproduces its case with
real processes and checks what the processes did, from a side-effect file they append to.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scenario import Figures, assert_clean

LEASE = 1.5
CONFIG = f"""
[worker]
poll_interval = 0.1
lease_timeout = {LEASE}
cancel_grace = 1.0
max_attempts = 3
retry_backoff = 0.05
"""
GUARD = 120.0  # seconds: a hang guard of each wait, not a timing claim


class Processes:
    """Starts Python scripts and tasktrail commands on one database, ends them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "tasks.db"
        (root / "tasktrail.toml").write_text(CONFIG)
        self.env = {**os.environ, "TASKTRAIL_DB": str(self.db), "PYTHONUNBUFFERED": "1"}
        self.started: list[subprocess.Popen[str]] = []

    def script(self, name: str, body: str, *args: str, prefix: list[str] | None = None,
               ) -> subprocess.Popen[str]:  # fmt: skip
        path = self.root / f"{name}.py"
        path.write_text(textwrap.dedent(body))
        command = [*(prefix or []), sys.executable, str(path), *args]
        process = subprocess.Popen(
            command, cwd=self.root, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.started.append(process)
        return process

    def cli(self, *args: str, prefix: list[str] | None = None) -> subprocess.Popen[str]:
        command = [*(prefix or []), sys.executable, "-m", "tasktrail", *args]
        process = subprocess.Popen(
            command, cwd=self.root, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.started.append(process)
        return process

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tasktrail", *args], cwd=self.root, env=self.env,
            capture_output=True, text=True, timeout=GUARD, check=False,
        )  # fmt: skip

    def lines(self, name: str = "effects.log") -> list[str]:
        path = self.root / name
        return path.read_text().split() if path.exists() else []

    def until(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + GUARD
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}")
            time.sleep(0.05)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        shown = self.run("history", task_id, "--json")
        assert shown.returncode == 0, shown.stderr
        return [json.loads(line) for line in shown.stdout.splitlines()]

    def close(self) -> None:
        """End every process started, and what they started (each leads its own group)."""
        for process in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes on a fresh database; every one is ended after the test."""
    made = Processes(tmp_path)
    yield made
    made.close()


def requeued(procs: Processes, task_id: str) -> bool:
    return any(e["type"] == "task.requeued" for e in procs.events(task_id))


BLOCKING_WORKER = f"""
    import asyncio, logging, os, sys, time
    from tasktrail import TaskManager

    logging.basicConfig(level=logging.WARNING)

    async def blocker(ctx):
        with open("effects.log", "a") as log:
            log.write(f"start{{ctx.attempt}}\\n")
        if ctx.attempt == 1:
            # Block the event loop (a blocking call in async code) until the test says go.
            while not os.path.exists("go"):
                time.sleep(0.02)
        with open("effects.log", "a") as log:
            log.write(f"end{{ctx.attempt}}\\n")
        return ctx.attempt

    async def main():
        async with TaskManager("tasks.db", lease_timeout={LEASE}, poll_interval=0.1,
                               max_attempts=3, retry_backoff=0.05) as tm:
            tm.register("blocker", blocker)
            task = await tm.launch("blocker", task_id="the-task")
            done = await tm.wait(task.id)
            print(done.state.value, done.attempt, done.result)

    asyncio.run(main())
"""

OBSERVER = f"""
    import asyncio, sys
    from tasktrail import TaskManager

    async def main():
        # Serves no agent: it only watches leases and recovers what dead workers left.
        async with TaskManager("tasks.db", lease_timeout={LEASE}, poll_interval=0.1) as tm:
            while True:
                task = await tm.get_task(sys.argv[1])
                if task is not None and task.state.value == "pending" and task.attempt == 1:
                    return
                await tm.store.wait_for_commit(0.1)

    asyncio.run(main())
"""


def test_a_worker_paused_past_its_lease_never_runs_an_attempt_twice(
    procs: Processes, figures: Figures
) -> None:
    """A blocked event loop past the lease: the task is recovered elsewhere; the paused
    attempt writes nothing when it wakes; attempt 2 starts after attempt 1 ended."""
    worker = procs.script("worker", BLOCKING_WORKER)
    procs.until(lambda: procs.lines() == ["start1"], "attempt 1 started")
    observer = procs.script("observer", OBSERVER, "the-task")
    assert observer.wait(GUARD) == 0, observer.communicate()[1]
    (procs.root / "go").touch()
    out, err = worker.communicate(timeout=GUARD)
    assert worker.returncode == 0, err
    assert out.split() == ["completed", "2", "2"]
    assert procs.lines() == ["start1", "end1", "start2", "end2"]  # never two at once
    kinds = [(e["type"], e["actor"]) for e in procs.events("the-task")]
    assert [k for k, _ in kinds] == [
        "task.created", "task.claimed", "task.started", "task.requeued",
        "task.claimed", "task.started", "task.completed",
    ]  # fmt: skip
    assert "superseded" in err
    assert_clean(procs.db, acknowledged=[("the-task", 7)])
    figures.add("9 fencing", paused_workers=1, double_runs=0)


SHELL_TASK = (
    "echo start$TASKTRAIL_ATTEMPT >> effects.log; "
    "until [ -e go ]; do sleep 0.05; done; echo end$TASKTRAIL_ATTEMPT >> effects.log"
)


def test_a_stopped_worker_resumes_without_running_its_lost_attempt(
    procs: Processes, figures: Figures
) -> None:
    """SIGSTOP a worker past its lease while another process recovers its task; SIGCONT:
    the old attempt's process is gone, the worker runs the task again as attempt 2."""
    submitted = procs.run("submit", "shell", SHELL_TASK, "--id", "doomed", "--max-attempts", "3")
    assert submitted.returncode == 0, submitted.stderr
    worker = procs.cli("worker", "--id", "stopped-worker", "--exit-when-idle")
    procs.until(lambda: procs.lines() == ["start1"], "attempt 1 started")
    os.kill(worker.pid, signal.SIGSTOP)
    # Another process, that does not run the task, notices the silence and recovers it.
    tasktrail = f"{sys.executable} -m tasktrail"
    waiter = procs.cli(
        "run",
        "shell",
        f"until {tasktrail} history doomed --json | grep -q task.requeued; do sleep 0.05; done",
    )
    assert waiter.wait(GUARD) == 0, waiter.communicate()[1]
    os.kill(worker.pid, signal.SIGCONT)
    procs.until(lambda: "start2" in procs.lines(), "attempt 2 started")
    (procs.root / "go").touch()
    _, err = worker.communicate(timeout=GUARD)
    assert worker.returncode == 0, err
    assert procs.lines() == ["start1", "start2", "end2"]  # attempt 1's process was ended
    final = json.loads(procs.run("show", "doomed", "--json").stdout)
    assert (final["state"], final["attempt"], final["worker_id"]) == (
        "completed", 2, "stopped-worker",
    )  # fmt: skip
    figures.add("9 fencing", stopped_workers=1, double_runs=0)


CLOCK_SHIFT = """
    import time
    _real = time.time
    time.time = lambda: _real() + {offset}   # this process's wall clock jumped
"""

HEALTHY_WORKER = """
    import asyncio
    from tasktrail import TaskManager

    async def hold(ctx):
        open("started", "w").close()
        await asyncio.Event().wait()

    async def main():
        async with TaskManager("tasks.db", lease_timeout={lease}, poll_interval=0.1) as tm:
            tm.register("hold", hold)
            await tm.launch("hold", task_id="healthy")
            await asyncio.Event().wait()

    asyncio.run(main())
"""

WATCHER = """
    import asyncio, json
    from tasktrail import TaskManager

    async def main():
        # Recover every round while the worker writes 12 heartbeats: it must stay alive.
        async with TaskManager("tasks.db", lease_timeout={lease}, poll_interval=0.1) as tm:
            seen, decided = set(), []
            while len(seen) < 12:
                workers = [w for w in await tm.store.list_workers() if w.worker_id != tm.worker_id]
                seen.update(w.heartbeat_at for w in workers)
                decided += [t.id for t in await tm.recover()]
                await asyncio.sleep(0.05)
            print(json.dumps(decided))

    asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("worker_offset", "watcher_offset"),
    [
        pytest.param(0, 45, id="watcher-clock-45s-ahead"),
        pytest.param(45, 0, id="worker-clock-45s-ahead"),
        pytest.param(0, -45, id="watcher-clock-45s-behind"),
    ],
)
def test_a_clock_step_never_makes_a_healthy_worker_look_dead(
    procs: Processes, worker_offset: int, watcher_offset: int, figures: Figures
) -> None:
    """Leases are judged by the observer's monotonic clock: a wall clock 45 s off (lease
    1.5 s) in either process takes no healthy worker for dead."""
    prefix = CLOCK_SHIFT.format(offset=worker_offset)
    procs.script("worker", prefix + HEALTHY_WORKER.format(lease=LEASE))
    procs.until(lambda: (procs.root / "started").exists(), "the task started")
    watcher = procs.script("watcher", CLOCK_SHIFT.format(offset=watcher_offset)
                           + WATCHER.format(lease=LEASE))  # fmt: skip
    out, err = watcher.communicate(timeout=GUARD)
    assert watcher.returncode == 0, err
    assert json.loads(out) == []
    shown = json.loads(procs.run("show", "healthy", "--json").stdout)
    assert (shown["state"], shown["attempt"]) == ("running", 1)
    figures.add("9 fencing", clock_steps=1, healthy_taken_for_dead=0)


def test_a_worker_in_another_pid_namespace_is_not_taken_for_dead(
    procs: Processes, figures: Figures
) -> None:
    """Same host name, another pid namespace (a container): its pid means nothing here,
    so only its lease counts, and it heartbeats."""
    if shutil.which("unshare") is None:
        raise AssertionError("this test needs unshare (util-linux) to make a pid namespace")
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    assert probe.returncode == 0, f"cannot make a pid namespace here: {probe.stderr!r}"
    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    procs.script("worker", HEALTHY_WORKER.format(lease=LEASE), prefix=prefix)
    procs.until(lambda: (procs.root / "started").exists(), "the task started")
    with sqlite3.connect(procs.db) as db:
        (pid, namespace), *_ = db.execute(
            "SELECT pid, pid_namespace FROM workers WHERE stopped_at IS NULL"
        ).fetchall()
    assert namespace != os.readlink("/proc/self/ns/pid")
    watcher = procs.script("watcher", WATCHER.format(lease=LEASE))
    out, err = watcher.communicate(timeout=GUARD)
    assert watcher.returncode == 0, err
    assert json.loads(out) == [], f"the worker (pid {pid} in its namespace) was taken for dead"
    figures.add("9 fencing", pid_namespaces=1, healthy_taken_for_dead=0)


BUSY_WORKER = """
    import asyncio, json, logging, sys
    from tasktrail import SQLiteEventStore, TaskManager

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    finished = []

    async def on_finished(task):
        finished.append(task.id)

    async def chatty(ctx):
        await ctx.write("before the lock\\n")
        await ctx.flush()
        open("locked-now", "w").close()
        while not __import__("os").path.exists("held"):
            await asyncio.sleep(0.02)
        await ctx.write("while the database is busy\\n")
        await ctx.flush()   # busy past the timeout: tried again, the text kept meanwhile
        return "done"

    async def main():
        store = SQLiteEventStore("tasks.db", busy_timeout=0.2)
        async with TaskManager(store, poll_interval=0.05, lease_timeout=30) as tm:
            tm.register("chatty", chatty)
            tm.on_finished(on_finished)
            task = await tm.launch("chatty", task_id="busy")
            done = await tm.wait(task.id)
            while "busy" not in finished:
                await asyncio.sleep(0.05)
            print(done.state.value, json.dumps(await tm.get_output(task.id)))

    asyncio.run(main())
"""


def test_a_busy_database_never_kills_a_worker_or_loses_output(
    procs: Processes, figures: Figures
) -> None:
    """A connection holding the write lock past the busy timeout: the worker's loops log
    and go on, an output write is tried again with its text kept, nothing is lost."""
    worker = procs.script("worker", BUSY_WORKER)
    procs.until(lambda: (procs.root / "locked-now").exists(), "the runner is ready")
    blocker = sqlite3.connect(procs.db, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock, like a long rebuild would
    (procs.root / "held").touch()
    time.sleep(1.0)  # the adversary: longer than the worker's busy timeout (0.2 s)
    blocker.execute("COMMIT")
    blocker.close()
    out, err = worker.communicate(timeout=GUARD)
    assert worker.returncode == 0, err
    state, output = out.split(" ", 1)
    assert state == "completed"
    assert json.loads(output) == "before the lock\nwhile the database is busy\n"
    assert "Traceback" not in err
    figures.add("9 fencing", busy_locks=1, lost_output=0)


DOOMED_WORKER = """
    import asyncio
    from tasktrail import TaskManager

    async def hold(ctx):
        open("started", "w").close()
        await asyncio.Event().wait()

    async def main():
        async with TaskManager("tasks.db", poll_interval=0.05) as tm:
            tm.register("hold", hold)
            await tm.launch("hold")
            await tm.serve()

    asyncio.run(main())
"""


def test_a_deleted_write_ahead_log_stops_the_worker_with_a_clear_error(
    procs: Processes, figures: Figures
) -> None:
    """Deleting the -wal file under a running worker is noticed: it stops, saying why."""
    worker = procs.script("worker", DOOMED_WORKER)
    procs.until(lambda: (procs.root / "started").exists(), "the task started")
    wal = Path(f"{procs.db}-wal")
    assert wal.exists()
    wal.unlink()
    _, err = worker.communicate(timeout=GUARD)
    assert worker.returncode != 0
    assert "write-ahead log" in err and "deleted" in err
    figures.add("9 fencing", deleted_wal=1, unnoticed=0)
