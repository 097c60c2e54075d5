"""Scenario 1, kill -9: worker processes SIGKILLed at random moments and at every crash point.

Two worker processes share one database. Each launches tasks, runs tasks (its own and the
other's) and prints an acknowledgement only after the append returned. Each round, each
process dies: by ``SIGKILL`` at a named crash point armed with ``TASKTRAIL_CRASH_AT``, or
by a ``SIGKILL`` from the test at a random moment. The next round's processes recover
what the dead left behind. At the end one clean worker drains the queue; then every
acknowledged task must be terminal, nothing lost, nothing run twice at once, nothing
duplicated, and the checker must find every invariant intact.

Sizes: ``TASKTRAIL_KILL_POINTS`` (CI 200, soak 2000) and ``TASKTRAIL_KILL_TASKS`` (CI
2000, soak 20000).
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from checker import check
from scenario import Figures, size

from tasktrail._crashpoints import POINTS

KILL_POINTS = int(size("TASKTRAIL_KILL_POINTS", 200, 2000))
TASKS = int(size("TASKTRAIL_KILL_TASKS", 2000, 20000))
PER_ROUND = 10  # tasks each process launches per round

WORKER = r"""
import asyncio, os, random, sys
from tasktrail import CancelRequested, NewEvent, TaskCancelled, TaskCreated, TaskManager

path, name, first, count, runs, seed, drain = sys.argv[1:]
first, count, rng = int(first), int(count), random.Random(int(seed))

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False

async def work(ctx):
    task = ctx.task
    lock = os.path.join(runs, task.id)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
    except FileExistsError:
        with open(lock) as f:
            other = f.read().strip()
        if other and int(other) != os.getpid() and alive(int(other)):
            print("double", task.id, other, flush=True)
    with open(lock, "w") as f:
        f.write(str(os.getpid()))
    print("ran", task.id, task.attempt, flush=True)
    await asyncio.sleep(rng.uniform(0, 0.01))
    os.unlink(lock)
    return task.id

async def launch(tm, i):
    task_id = f"{name}-{i}"
    if i % 5 == 4:  # a three-event batch straight on the store
        events = [
            NewEvent(TaskCreated(agent="w")),
            NewEvent(CancelRequested(force=True)),
            NewEvent(TaskCancelled(forced=True)),
        ]
        print("intent", task_id, *(e.event_id for e in events), flush=True)
        done = await tm.store.append(task_id, events, expected_version=0)
        print("ack", task_id, done.version, flush=True)
        return
    task = await tm.launch("w", task_id=task_id)
    print("ack", task_id, task.version, flush=True)
    task = await tm.wait(task_id)
    print("ack", task_id, task.version, flush=True)

async def main():
    async with TaskManager(
        path, poll_interval=0.01, max_running=8, max_attempts=3, lease_timeout=3.0,
        worker_id=f"{name}:{os.getpid()}",
    ) as tm:
        tm.register("w", work)
        print("ready", flush=True)
        if drain == "1":
            for _ in range(6000):
                if not await tm.list_tasks(state="pending") and not [
                    t for t in await tm.list_tasks() if not t.is_terminal
                ]:
                    print("drained", flush=True)
                    return
                await asyncio.sleep(0.01)
            sys.exit("the queue did not drain")
        await asyncio.gather(*(launch(tm, i) for i in range(first, first + count)))
        print("idle", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@dataclass
class Harvest:
    """What the workers printed: acknowledgements, batch intents, runs, double runs."""

    acknowledged: set[tuple[str, int]] = field(default_factory=set)
    intents: list[tuple[str, ...]] = field(default_factory=list)
    runs: int = 0
    doubles: list[str] = field(default_factory=list)

    def read(self, output: str) -> None:
        """Take in one process's standard output."""
        for line in output.splitlines():
            words = line.split()
            match words:
                case ["ack", task_id, version]:
                    self.acknowledged.add((task_id, int(version)))
                case ["intent", _task_id, *event_ids]:
                    self.intents.append(tuple(event_ids))
                case ["ran", _task_id, _attempt]:
                    self.runs += 1
                case ["double", *_]:
                    self.doubles.append(line)


def start(path: Path, name: str, first: int, runs: Path, seed: int, crash: str | None, drain: bool):
    """Start one worker process (``crash``: the TASKTRAIL_CRASH_AT to arm, if any)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG",)}
    env.pop("TASKTRAIL_CRASH_AT", None)
    if crash is not None:
        env["TASKTRAIL_CRASH_AT"] = crash
    argv = [str(path), name, str(first), str(0 if drain else PER_ROUND), str(runs), str(seed)]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *argv, "1" if drain else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_dead(proc: subprocess.Popen[str], deadline: float) -> bool:
    """Wait until ``proc`` ends or ``deadline`` (monotonic) passes; True if it ended."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.005)
    return proc.poll() is not None


def test_kill9_at_random_moments_and_every_crash_point(tmp_path: Path, figures: Figures) -> None:
    """SIGKILLed workers lose no acknowledged task; a clean worker drains; all invariants hold."""
    path, runs = tmp_path / "kill.db", tmp_path / "runs"
    runs.mkdir()
    rng = random.Random(20261121)
    harvest = Harvest()
    kills: Counter[str] = Counter()
    round_no = 0
    while sum(kills.values()) < KILL_POINTS or len({t for t, _ in harvest.acknowledged}) < TASKS:
        procs = []
        for slot in range(2):
            armed = None
            if (round_no + slot) % 3 != 2:  # two kills in three at a crash point
                point = POINTS[(round_no * 2 + slot) % len(POINTS)]
                armed = f"{point}:{rng.randint(1, 4)}"
            first = (round_no * 2 + slot) * PER_ROUND
            procs.append(
                (start(path, f"p{slot}", first, runs, rng.randrange(1 << 30), armed, False), armed)
            )
        for proc, _ in procs:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)  # a hang guard
            assert ready, "a worker did not start"
        for proc, armed in procs:
            if armed is not None and wait_dead(proc, time.monotonic() + 1.5):
                assert proc.returncode == -signal.SIGKILL, proc.communicate()[1]
                kills[armed.split(":")[0]] += 1
                continue
            time.sleep(rng.uniform(0, 0.25))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            kills["random"] += 1
        for proc, _ in procs:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, err
            harvest.read(out)
        round_no += 1

    drainer = start(path, "drain", 0, runs, 1, None, True)
    out, err = drainer.communicate(timeout=120)
    assert drainer.returncode == 0, err
    assert "drained" in out
    harvest.read(out)

    report = check(path, acknowledged=harvest.acknowledged, batches=harvest.intents)
    assert report.ok, "\n".join(report.details)
    acked = {task_id for task_id, _ in harvest.acknowledged}
    with sqlite3.connect(path) as db:
        states = dict(db.execute("SELECT id, state FROM tasks").fetchall())
        created = Counter(
            stream for (stream,) in db.execute("SELECT stream_id FROM events WHERE version = 1")
        )
        finishes = Counter(
            stream
            for (stream,) in db.execute(
                "SELECT stream_id FROM events WHERE type IN "
                "('task.completed', 'task.failed', 'task.cancelled')"
            )
        )
    lost = [task_id for task_id in acked if task_id not in states]
    unfinished = [t for t in acked if states.get(t) not in ("completed", "failed", "cancelled")]
    assert lost == []
    assert unfinished == []
    assert harvest.doubles == []
    assert all(n == 1 for n in created.values())
    assert all(n == 1 for n in finishes.values())
    assert set(POINTS) <= set(kills), f"crash points never reached: {set(POINTS) - set(kills)}"
    figures.add(
        "1 kill -9",
        kill_points=sum(kills.values()),
        at_crash_points=sum(n for k, n in kills.items() if k != "random"),
        crash_points_hit=len(set(kills) - {"random"}),
        processes=2,
        rounds=round_no,
        tasks=len(acked),
        runs=harvest.runs,
        completed=sum(1 for t in acked if states[t] == "completed"),
        lost=len(lost),
        double_runs=len(harvest.doubles),
        events=report.events,
    )
