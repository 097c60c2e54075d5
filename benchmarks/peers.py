"""Task throughput of tasktrail and of the libraries a user would pick instead (scenario
2, at concurrency 1, 8 and 64), and replay beside eventsourcing's (scenario 4).

:func:`part_peers` runs every system at every concurrency, each run in a fresh interpreter
(this file as a child process), so no system inherits another's threads, caches or
garbage::

    python benchmarks/peers.py SYSTEM --tasks N --concurrency C --dir DIR [--replay]

prints one JSON object: the seconds from the first submission until every task finished,
how each system was configured (its SQLite ``synchronous`` and ``journal_mode``, read
back from its own connection where it exposes one), and with ``--replay`` the seconds to
read the whole log back and fold it into a state per task. It can be run by hand too.

Systems (every one on a fresh SQLite file in ``--dir``, WAL, ``synchronous=FULL``):

tasktrail
    ``runtime.end_to_end(watch=True)``: ``TaskManager(path, max_running=C,
    poll_interval=0.5)`` with ``async def noop(ctx): return None`` registered; N launches
    (``asyncio.gather`` in chunks of 500); the caller learns that everything finished by
    one query after each commit (``store.list_tasks(state=live, limit=1)`` after
    ``store.wait_for_commit``). Four durable events per task (created, claimed, started,
    completed; a claim and its start in one commit, often with the creation or the
    previous task's outcome) plus the ``tasks`` projection row, all hash-chained.
eventsourcing
    ``Application`` with ``PERSISTENCE_MODULE=eventsourcing.sqlite`` and an aggregate
    ``BenchTask`` with the same four events (``Created``, ``Claimed``, ``Started``,
    ``Completed``), each ``app.save``-d on its own, as a worker would record them; C
    threads share the tasks. It has no scheduler or runner: this is its store alone.
    It switches the file to WAL itself and leaves ``synchronous`` at SQLite's default,
    FULL here (read back and recorded).
huey
    ``SqliteHuey(filename=path, fsync=True)`` (``synchronous=FULL``, WAL, its defaults
    otherwise), a ``@huey.task()`` that returns ``True`` (so a result is stored), a
    consumer with C worker threads in this process, polling every 1 ms when idle. The
    caller enqueues N tasks and polls ``huey.result_count()`` every 2 ms. huey writes 3
    rows per task (enqueue, dequeue = delete, result) and keeps no history.
dbos
    DBOS with its system database on SQLite (``system_database_url=sqlite:///path``, the
    file switched to WAL before DBOS opens it; ``synchronous`` at SQLite's default, FULL
    here, read back), a queue registered with ``worker_concurrency=C`` and
    ``polling_interval_sec=0.01`` and a ``@DBOS.workflow()`` that returns ``None``. The
    caller enqueues N workflows and polls the count of ``SUCCESS`` rows in DBOS's
    ``workflow_status`` table every 2 ms (``handle.get_result()`` polls each workflow
    every second, which would make the end of the run wait for a poll).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from common import PEERS, Comparison, Figure, Outcome, Row, Say, Settings, remove_db, short

SYSTEMS: Final = ("tasktrail", *PEERS)
POLL: Final = 0.002
"""Seconds between two checks of the caller that waits for every task to finish."""
TARGETS: Final = {1: 1.0, 8: 1.5, 64: 5.0}
"""tasktrail's throughput over the fastest peer's, at the same concurrency (issue 13;
at concurrency 1 the peer is huey, whose three writes per task set the pace there)."""


def _pragmas(db: Any) -> dict[str, Any]:
    """``synchronous`` and ``journal_mode`` as a DB-API connection or cursor reads them."""
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

    def read(pragma: str) -> Any:
        cursor = db.execute(f"PRAGMA {pragma}")
        return (cursor if cursor is not None else db).fetchone()[0]

    sync, mode = read("synchronous"), read("journal_mode")
    return {"synchronous": names.get(sync, sync), "journal_mode": str(mode).upper()}


# -- tasktrail -------------------------------------------------------------------------------


def run_tasktrail(path: Path, tasks: int, concurrency: int, replay: bool) -> dict[str, Any]:
    from runtime import end_to_end
    from tasktrail import SQLiteEventStore

    done = asyncio.run(end_to_end(path, tasks, concurrency, watch=True, probe=False))
    db = sqlite3.connect(path)
    try:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()
    result: dict[str, Any] = {
        "seconds": done.seconds,
        "events": events,
        "config": {"synchronous": "FULL", "journal_mode": "WAL", "max_running": concurrency},
    }
    if replay:

        async def rebuild() -> tuple[float, int]:
            async with SQLiteEventStore(path) as store:
                start = time.perf_counter()
                rebuilt = await store.rebuild()
                return time.perf_counter() - start, rebuilt

        result["replay_seconds"], rebuilt = asyncio.run(rebuild())
        if rebuilt != tasks:
            raise RuntimeError(f"tasktrail: rebuilt {rebuilt} of {tasks} tasks")
    return result


# -- eventsourcing ---------------------------------------------------------------------------


def run_eventsourcing(path: Path, tasks: int, concurrency: int, replay: bool) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class BenchTask(Aggregate):  # type: ignore[misc]
        @event("Created")  # type: ignore[misc]
        def __init__(self, agent: str, prompt: str) -> None:
            self.agent, self.prompt, self.state = agent, prompt, "pending"

        @event("Claimed")  # type: ignore[misc]
        def claim(self, worker_id: str, attempt: int) -> None:
            self.state, self.worker_id, self.attempt = "starting", worker_id, attempt

        @event("Started")  # type: ignore[misc]
        def start(self, session_id: str) -> None:
            self.state, self.session_id = "running", session_id

        @event("Completed")  # type: ignore[misc]
        def complete(self, result: object) -> None:
            self.state, self.result = "completed", result

    class Tasks(Application):  # type: ignore[misc]
        is_snapshotting_enabled = False

    app = Tasks(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})

    def lifecycle(index: int) -> None:
        worker = f"worker-{threading.get_ident() % 10_000:04d}"
        task = BenchTask(agent="bench", prompt=f"summarise report {index}")
        app.save(task)
        task.claim(worker_id=worker, attempt=1)
        app.save(task)
        task.start(session_id=f"session-{index:08d}")
        app.save(task)
        task.complete(result=None)
        app.save(task)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lifecycle, range(tasks)))
    elapsed = time.perf_counter() - start
    with app.recorder.datastore.transaction(commit=False) as cursor:
        config = _pragmas(cursor)
    result: dict[str, Any] = {"seconds": elapsed, "config": {**config, "threads": concurrency}}
    states: dict[Any, str] = {}
    replay_start = time.perf_counter()
    position, count = 1, 0
    while True:
        notifications = app.recorder.select_notifications(start=position, limit=10_000)
        if not notifications:
            break
        for notification in notifications:
            domain_event = app.mapper.to_domain_event(notification)
            states[domain_event.originator_id] = type(domain_event).__name__
        count += len(notifications)
        position = notifications[-1].id + 1
    replay_seconds = time.perf_counter() - replay_start
    if count != 4 * tasks or len(states) != tasks or set(states.values()) != {"Completed"}:
        raise RuntimeError(f"eventsourcing: {count} events, {len(states)} tasks, {set(states)}")
    result["events"] = count
    if replay:
        result["replay_seconds"] = replay_seconds
    return result


# -- huey -----------------------------------------------------------------------------------


def run_huey(path: Path, tasks: int, concurrency: int) -> dict[str, Any]:
    from huey import SqliteHuey
    from huey.consumer import Consumer

    logging.getLogger("huey").setLevel(logging.WARNING)
    huey = SqliteHuey("bench", filename=str(path), fsync=True, journal_mode="wal")

    @huey.task()  # type: ignore[misc]
    def noop(index: int) -> bool:
        return True

    consumer = Consumer(
        huey,
        workers=concurrency,
        worker_type="thread",
        initial_delay=0.001,
        backoff=1.0,
        max_delay=0.001,
        periodic=False,
        check_worker_health=False,
    )
    consumer._set_signal_handlers = lambda: None  # it runs in a thread here, not main
    runner = threading.Thread(target=consumer.run, name="huey-consumer", daemon=True)
    runner.start()
    time.sleep(0.2)  # let the workers start before the clock does
    start = time.perf_counter()
    for index in range(tasks):
        noop(index)
    while huey.result_count() < tasks:
        time.sleep(POLL)
    elapsed = time.perf_counter() - start
    consumer.stop(graceful=True)
    runner.join(timeout=10)
    config = _pragmas(huey.storage.conn)
    return {
        "seconds": elapsed,
        "events": 3 * tasks,
        "config": {**config, "consumer_threads": concurrency},
    }


# -- dbos -----------------------------------------------------------------------------------


def run_dbos(path: Path, tasks: int, concurrency: int) -> dict[str, Any]:
    from dbos import DBOS
    from dbos._dbos import _get_dbos_instance

    logging.getLogger("dbos").setLevel(logging.WARNING)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")  # persistent: DBOS opens it in WAL
    finally:
        db.close()
    DBOS(
        config={
            "name": "tasktrail-bench",
            "system_database_url": f"sqlite:///{path}",
        }
    )

    @DBOS.workflow()  # type: ignore[misc]
    def noop(index: int) -> None:
        return None

    DBOS.launch()
    try:
        queue = DBOS.register_queue(
            "bench", worker_concurrency=concurrency, polling_interval_sec=0.01
        )
        watcher = sqlite3.connect(path)
        count = "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'"
        start = time.perf_counter()
        for index in range(tasks):
            queue.enqueue(noop, index)
        while watcher.execute(count).fetchone()[0] < tasks:
            time.sleep(POLL)
        elapsed = time.perf_counter() - start
        watcher.close()
        engine = _get_dbos_instance()._sys_db.engine  # what DBOS itself writes through
        with engine.connect() as connection:
            config = {
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                    connection.exec_driver_sql("PRAGMA synchronous").scalar()
                ],
                "journal_mode": str(
                    connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                ).upper(),
            }
    finally:
        DBOS.destroy()
    return {
        "seconds": elapsed,
        "config": {**config, "worker_concurrency": concurrency, "polling_interval_sec": 0.01},
    }


def run(system: str, path: Path, tasks: int, concurrency: int, replay: bool) -> dict[str, Any]:
    """One measured run of ``system`` on a fresh file ``path``."""
    remove_db(path)
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "tasktrail": lambda: run_tasktrail(path, tasks, concurrency, replay),
        "eventsourcing": lambda: run_eventsourcing(path, tasks, concurrency, replay),
        "huey": lambda: run_huey(path, tasks, concurrency),
        "dbos": lambda: run_dbos(path, tasks, concurrency),
    }
    result = runners[system]()
    remove_db(path)
    return {
        "system": system,
        "version": metadata.version(system),
        "tasks": tasks,
        "concurrency": concurrency,
        **result,
    }


# -- the part, in the parent -------------------------------------------------------------------


def _child(system: str, tasks: int, concurrency: int, directory: str, replay: bool) -> Any:
    command = [
        sys.executable, str(Path(__file__).resolve()), system, "--tasks", str(tasks),
        "--concurrency", str(concurrency), "--dir", directory,
    ]  # fmt: skip
    if replay:
        command.append("--replay")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_peers(s: Settings, say: Say) -> Outcome:
    """Throughput vs concurrency for tasktrail and each peer (2), and replay beside
    eventsourcing's notification log (4); every run in a fresh interpreter, the systems
    in a rotating order."""
    systems = ("tasktrail", *s.peers)
    runs: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tasktrail-peers-", dir=s.directory) as tmp:
        for repetition in range(s.repeat):
            order = systems[repetition % len(systems) :] + systems[: repetition % len(systems)]
            for level in s.sweep_levels:
                for system in order:
                    result = _child(system, s.sweep_tasks, level, tmp, replay=False)
                    runs.append(result)
                    say(
                        f"{repetition + 1}/{s.repeat} {system:<13} concurrency {level:>3}: "
                        f"{result['tasks'] / result['seconds']:>8,.0f} tasks/s"
                    )
            if "eventsourcing" in s.peers:
                for system, level in (("tasktrail", s.max_running), ("eventsourcing", 8)):
                    result = _child(system, s.replay_tasks, level, tmp, replay=True)
                    replays.append(result)
                    say(
                        f"{repetition + 1}/{s.repeat} {system:<13} replay of "
                        f"{result['events']:,} events: "
                        f"{result['events'] / result['replay_seconds']:>9,.0f} events/s"
                    )
    out = Outcome(data={"runs": runs, "replays": replays})
    for system in systems:
        for level in s.sweep_levels:
            mine = [r for r in runs if r["system"] == system and r["concurrency"] == level]
            samples = tuple(r["tasks"] / r["seconds"] for r in mine)
            out.sweep.setdefault(system, {})[level] = Figure(system, "tasks/s", samples)
    out.data["configs"] = {r["system"]: r["config"] for r in runs}
    for level in s.sweep_levels:
        ours = out.sweep["tasktrail"][level]
        if not s.peers:
            break
        if level == 1 and "huey" in s.peers:
            peer, against = "huey", "huey"
        else:
            peer = max(s.peers, key=lambda p: out.sweep[p][level].median)
            against = "the fastest peer"
        theirs = out.sweep[peer][level]
        c = Comparison(
            f"concurrency_{level}",
            f"{s.sweep_tasks:,} no-op tasks at concurrency {level}, tasks/s",
            Figure(f"TaskManager, max_running {level}", "tasks/s", ours.samples),
            Figure(f"{peer}, concurrency {level}", "tasks/s", theirs.samples),
        )
        target = TARGETS.get(level)
        if target is None:
            out.rows.append(Row(2, c))
        else:
            text = f">= {target:g} x {against}"
            out.rows.append(Row(2, c, text, c.ratio >= target))
    if replays:
        figures = {
            system: Figure(
                label,
                "events/s",
                tuple(r["events"] / r["replay_seconds"] for r in replays if r["system"] == system),
            )
            for system, label in (
                ("tasktrail", "store.rebuild()"),
                ("eventsourcing", "eventsourcing notification log + fold"),
            )
        }
        c = Comparison(
            "replay_vs_eventsourcing",
            f"Replay of {short(s.replay_tasks * 4)} events vs eventsourcing, events/s",
            figures["tasktrail"],
            figures["eventsourcing"],
        )
        out.rows.append(Row(4, c))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one throughput run of one system")
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=Path("."))
    parser.add_argument(
        "--replay",
        action="store_true",
        help="also time a full replay (tasktrail: store.rebuild(); eventsourcing: its "
        "notification log folded into a state per task)",
    )
    args = parser.parse_args(argv)
    path = args.dir / f"peer-{args.system}-{os.getpid()}.db"
    result = run(args.system, path, args.tasks, args.concurrency, args.replay)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
