"""Scenario 3, contention: processes launching, claiming, running and cancelling tasks on
one file for a while, with a tailing reader; and processes racing to create a new file.

0 "database is locked" reaching a caller, 0 double claims, the reader never misses or
repeats an event, the WAL stays bounded, and the checker finds every invariant intact.

Sizes: ``TASKTRAIL_CONTENTION_SECONDS`` (CI 60, soak 600), ``TASKTRAIL_CONTENTION_PROCESSES``
(CI 2, soak 4), ``TASKTRAIL_CREATE_ROUNDS`` (CI 100, soak 1000).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from scenario import Figures, assert_clean, size

from tasktrail import NewEvent, SQLiteEventStore, TaskCreated

SECONDS = size("TASKTRAIL_CONTENTION_SECONDS", 60, 600)
PROCESSES = int(size("TASKTRAIL_CONTENTION_PROCESSES", 2, 4))
CREATE_ROUNDS = int(size("TASKTRAIL_CREATE_ROUNDS", 100, 1000))
WAL_BOUND = 64 << 20  # bytes: far above SQLite's 4 MB auto-checkpoint, far below unbounded

WORKER = r"""
import asyncio, json, random, sys, time
from tasktrail import StorageBusyError, TaskManager, TasktrailError

path, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = random.Random(name)

async def work(ctx):
    for _ in range(rng.randrange(3)):
        await ctx.write("x")
        await asyncio.sleep(0.001)
    return ctx.task.id

async def main():
    counts = {"launched": 0, "cancels": 0, "busy": 0, "errors": 0, "finished": 0}
    mine = []
    async with TaskManager(
        path, poll_interval=0.01, max_running=4, limits={"w": 3 * 4}, lease_timeout=60,
    ) as tm:
        tm.register("w", work)
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                task = await tm.launch("w", task_id=f"{name}-{counts['launched']}")
                counts["launched"] += 1
                mine.append(task.id)
                if rng.random() < 0.1:
                    await tm.cancel(rng.choice(mine), force=rng.random() < 0.5)
                    counts["cancels"] += 1
                await tm.get_task(rng.choice(mine))
            except StorageBusyError:
                counts["busy"] += 1
            except TasktrailError as err:
                counts["errors"] += 1
                print("error", type(err).__name__, err, file=sys.stderr, flush=True)
            await asyncio.sleep(0.003)
        for task_id in mine:
            try:
                await tm.wait(task_id, timeout=60)
                counts["finished"] += 1
            except StorageBusyError:
                counts["busy"] += 1
    print(json.dumps(counts), flush=True)

asyncio.run(main())
"""

READER = r"""
import asyncio, json, os, sys
from tasktrail import SQLiteEventStore

path, stop = sys.argv[1], sys.argv[2]

async def main():
    position = gaps = polls = max_wal = 0
    async with SQLiteEventStore(path) as store:
        print("ready", flush=True)
        while True:
            stopping = os.path.exists(stop)
            events = await store.read_all(after=position, limit=1000)
            polls += 1
            for event in events:
                if event.sequence != position + 1:
                    gaps += 1
                position = event.sequence
            try:
                max_wal = max(max_wal, os.path.getsize(path + "-wal"))
            except OSError:
                pass
            if stopping and not events:
                break
            if not events:
                await asyncio.sleep(0.005)
    print(json.dumps({"read": position, "gaps": gaps, "polls": polls, "max_wal": max_wal}))

asyncio.run(main())
"""


def spawn(script: str, *argv: str) -> subprocess.Popen[str]:
    """Start a Python process running ``script``, with asyncio debug mode off."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    return subprocess.Popen(
        [sys.executable, "-W", "error", "-c", script, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_processes_contend_for_a_while_with_a_tailing_reader(
    tmp_path: Path, figures: Figures
) -> None:
    """Launching, claiming, running and cancelling from several processes: nothing breaks."""
    path, stop = tmp_path / "contended.db", tmp_path / "stop"
    sqlite3.connect(path).close()  # the file exists; the workers race to create the schema
    workers = [spawn(WORKER, str(path), f"p{n}", str(SECONDS)) for n in range(PROCESSES)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n", worker.communicate()[1]
        reader = spawn(READER, str(path), str(stop))
        assert reader.stdout is not None
        assert reader.stdout.readline() == "ready\n", reader.communicate()[1]
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=SECONDS + 300)  # a hang guard
            assert worker.returncode == 0, err
            assert err == "", err
            results.append(json.loads(out.splitlines()[-1]))
        stop.touch()
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        tail = json.loads(out.splitlines()[-1])
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    report = assert_clean(path)
    with sqlite3.connect(path) as db:
        claims = Counter(
            db.execute(
                "SELECT stream_id, json_extract(data, '$.attempt') FROM events "
                "WHERE type = 'task.claimed'"
            ).fetchall()
        )
        (head,) = db.execute("SELECT max(seq) FROM events").fetchone()
    db.close()
    totals = Counter[str]()
    for result in results:
        totals.update(result)
    assert totals["busy"] == 0
    assert totals["errors"] == 0
    assert totals["finished"] == totals["launched"]
    assert [key for key, n in claims.items() if n > 1] == []  # no double claim
    assert (tail["read"], tail["gaps"]) == (head, 0)  # the reader saw every event once
    assert tail["max_wal"] < WAL_BOUND
    figures.add(
        "3 contention",
        processes=PROCESSES,
        seconds=SECONDS,
        tasks=totals["launched"],
        cancels=totals["cancels"],
        claims=sum(claims.values()),
        events=report.events,
        busy_errors=totals["busy"],
        double_claims=0,
        reader_gaps=tail["gaps"],
        max_wal_mb=round(tail["max_wal"] / 2**20, 1),
    )


CREATOR = r"""
import asyncio, os, sys, time
from tasktrail import NewEvent, SQLiteEventStore, TaskCreated, TasktrailError

directory, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def create(path):
    async with SQLiteEventStore(path) as store:
        await store.append(name, [NewEvent(TaskCreated(agent=name))], expected_version=0)

for round in range(rounds):
    print("ready", round, flush=True)
    go = os.path.join(directory, f"go-{round}")
    while not os.path.exists(go):
        time.sleep(0.0002)
    try:
        asyncio.run(create(os.path.join(directory, f"new-{round}.db")))
        print("done", round, flush=True)
    except TasktrailError as err:
        print("failed", round, type(err).__name__, err, flush=True)
"""


def test_three_processes_create_the_same_new_file_many_times(
    tmp_path: Path, figures: Figures
) -> None:
    """Three processes open the same new file at the same moment, round after round: 0 fail."""
    creators = [spawn(CREATOR, str(tmp_path), f"c{n}", str(CREATE_ROUNDS)) for n in range(3)]
    failures = []
    try:
        for round_no in range(CREATE_ROUNDS):
            for proc in creators:
                assert proc.stdout is not None
                assert proc.stdout.readline() == f"ready {round_no}\n", proc.stderr
            (tmp_path / f"go-{round_no}").touch()
            for proc in creators:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line != f"done {round_no}\n":
                    failures.append(line)
        for proc in creators:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in creators:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert failures == []
    for round_no in range(CREATE_ROUNDS):
        path = tmp_path / f"new-{round_no}.db"
        assert assert_clean(path).tasks == 3
    figures.add("3 contention", create_rounds=CREATE_ROUNDS, create_failures=len(failures))


async def test_reads_after_an_acknowledged_append_see_it_under_concurrent_reads(
    db_path: Path,
) -> None:
    """While many reads share the reader connection, a read after an append always sees it."""
    unseen = []
    async with SQLiteEventStore(db_path) as store:

        async def writer(n: int) -> None:
            await store.append(f"t{n}", [NewEvent(TaskCreated(agent="a"))])
            if await store.get_task(f"t{n}") is None:
                unseen.append(n)

        async def reader() -> None:
            for _ in range(20):
                await store.list_tasks(limit=50)
                await store.read_all(limit=50)

        await asyncio.gather(*(writer(n) for n in range(200)), *(reader() for _ in range(20)))
    assert unseen == []
    assert_clean(db_path, acknowledged=[(f"t{n}", 1) for n in range(200)])
