"""``tasktrail demo``: the core at work on a real database, in a few seconds.

Nothing is faked but the agents' work (short sleeps): the tasks, claims, cancels, the
killed process and the tampering all go through the real store and the real file.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tasktrail.cli._main import history_table, task_table
from tasktrail.errors import IllegalTransitionError, TamperedLogError, VersionConflictError
from tasktrail.events import (
    CancelRequested,
    NewEvent,
    OutputAppended,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.lifecycle import TaskState
from tasktrail.store import SQLiteEventStore

__all__ = ["run_demo"]

_AGENTS = ("researcher", "coder", "reviewer")
_WORKERS = 3

# The child process of step 3: appends lifecycles and prints "ack TASK VERSION" for each
# append only after append() returned, i.e. after its commit.
_CRASH_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from tasktrail import (NewEvent, SQLiteEventStore, TaskClaimed, TaskCreated,
                           TaskStarted, OutputAppended)

    async def life(store, n):
        steps = [TaskCreated(agent="coder", prompt=f"job {n}"),
                 TaskClaimed(worker_id="doomed-worker", attempt=1), TaskStarted()]
        steps += [OutputAppended(text=f"line {i}\\n") for i in range(1000)]
        for version, payload in enumerate(steps):
            await store.append(f"crash-{n:02d}", [NewEvent(payload, actor="doomed-worker")],
                               expected_version=version)
            print(f"ack crash-{n:02d} {version + 1}", flush=True)

    async def main():
        async with SQLiteEventStore(sys.argv[1]) as store:
            await asyncio.gather(*(life(store, n) for n in range(8)))

    asyncio.run(main())
    """
)


async def run_demo(*, keep: str | None, task_count: int, console: Console) -> None:
    """Run the whole demonstration, printing each step."""
    started = time.monotonic()
    directory = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tasktrail-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    console.print(f"[bold]tasktrail demo[/] database: {path}")

    async with SQLiteEventStore(path) as store:
        console.rule(f"1. {task_count} simulated agent tasks, {_WORKERS} workers at a time")
        fail_id, cancel_id = await _run_tasks(store, task_count, console)

        console.rule("2. A cancelled task cannot come back")
        cancelled = await store.get_task(cancel_id)
        assert cancelled is not None
        try:
            await store.append(
                cancel_id, [NewEvent(TaskCompleted(result="late"), actor="worker-1")]
            )
        except IllegalTransitionError as err:
            console.print(f"late 'completed' refused: [yellow]{err}[/]")

        console.rule("3. A writer process killed with SIGKILL mid-append")
        await _crash_and_recover(store, path, console)

        console.rule(f"4. Replaying {fail_id}, step by step")
        events = await store.history(fail_id)
        console.print(history_table(events, title=f"timeline of {fail_id}"))
        steps = Table(title="state after each version")
        for column in ("version", "state", "attempt", "error"):
            steps.add_column(column)
        for event in events:
            then = await store.state_at(fail_id, version=event.version)
            assert then is not None
            steps.add_row(str(event.version), then.state.value, str(then.attempt), then.error or "")
        console.print(steps)

        console.rule("5. The hash chain")
        report = await store.verify()
        console.print(
            f"[green]verified[/] {report.events} events; head #{report.head_sequence} "
            f"{report.head_hash[:16]}..."
        )
        rebuilt = await store.rebuild()
        console.print(
            f"projection dropped and rebuilt from the log: {rebuilt} tasks, "
            f"differences from live: {len(await store.check_projection())}"
        )
    await _tamper(path, directory / "tampered.db", console)
    console.rule()
    console.print(
        f"done in {time.monotonic() - started:.1f} s. Look inside: "
        f'sqlite3 {path} "SELECT seq, stream_id, type, data FROM events LIMIT 5"'
    )


async def _run_tasks(store: SQLiteEventStore, count: int, console: Console) -> tuple[str, str]:
    rng = random.Random(7)
    ids = [f"task-{n:02d}" for n in range(count)]
    fail_id, cancel_id = ids[1], ids[2]
    for n, task_id in enumerate(ids):
        agent = _AGENTS[n % len(_AGENTS)]
        await store.append(
            task_id,
            [
                NewEvent(
                    TaskCreated(
                        agent=agent, prompt=f"step {n} of the plan", description=f"{agent} job {n}"
                    ),
                    actor="user",
                )
            ],
            expected_version=0,
        )
    stats = {"conflicts": 0}

    async def work(worker: str) -> None:
        while True:
            pending = await store.list_tasks(state=TaskState.PENDING, limit=2)
            if not pending:
                return
            task = rng.choice(pending)  # two workers may pick the same task: one wins
            try:
                claimed = await store.append(
                    task.id,
                    [
                        NewEvent(
                            TaskClaimed(worker_id=worker, attempt=task.attempt + 1), actor=worker
                        )
                    ],
                    expected_version=task.version,
                )
            except (VersionConflictError, IllegalTransitionError):
                stats["conflicts"] += 1
                continue
            await _simulate(store, claimed.task.id, worker, fail_id, rng)

    async def cancel_later() -> None:
        while (task := await store.get_task(cancel_id)) and task.state is not TaskState.RUNNING:
            if task.is_terminal:
                return
            await asyncio.sleep(0.02)
        await store.append(
            cancel_id, [NewEvent(CancelRequested(), actor="user", reason="user changed their mind")]
        )

    with Live(task_table([]), console=console, refresh_per_second=10, transient=False) as live:
        runners = [asyncio.create_task(work(f"worker-{w + 1}")) for w in range(_WORKERS)]
        runners.append(asyncio.create_task(cancel_later()))
        while not all(r.done() for r in runners):
            live.update(task_table(await store.list_tasks()))
            await asyncio.sleep(0.1)
        await asyncio.gather(*runners)
        live.update(task_table(await store.list_tasks()))
    console.print(f"claims lost to another worker (optimistic concurrency): {stats['conflicts']}")
    return fail_id, cancel_id


async def _simulate(
    store: SQLiteEventStore, task_id: str, worker: str, fail_id: str, rng: random.Random
) -> None:
    """A pretend agent: start, write some output, then complete or fail.

    Every append re-checks the lifecycle, so a cancel requested meanwhile turns the next
    step into an IllegalTransitionError, and the worker acknowledges the cancel instead.
    """
    try:
        await store.append(
            task_id, [NewEvent(TaskStarted(session_id=f"ses-{task_id}"), actor=worker)]
        )
        for line in range(3):
            await asyncio.sleep(rng.uniform(0.05, 0.25))
            await store.append(
                task_id, [NewEvent(OutputAppended(text=f"thinking... {line}\n"), actor=worker)]
            )
        if task_id == fail_id:
            await store.append(
                task_id,
                [
                    NewEvent(
                        TaskFailed(error="tool 'search' timed out"),
                        actor=worker,
                        reason="runner raised",
                    )
                ],
            )
        else:
            await store.append(
                task_id, [NewEvent(TaskCompleted(result={"summary": "done"}), actor=worker)]
            )
    except IllegalTransitionError:
        task = await store.get_task(task_id)
        if task is not None and task.cancel_requested and not task.is_terminal:
            await store.append(
                task_id,
                [
                    NewEvent(
                        TaskCancelled(), actor=worker, reason="cancel acknowledged by the runner"
                    )
                ],
            )


async def _crash_and_recover(store: SQLiteEventStore, path: Path, console: Console) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASH_CHILD,
        str(path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)
    child.send_signal(signal.SIGKILL)
    raw, _ = await child.communicate()
    out = raw.decode()
    acked: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ack":
            acked[parts[1]] = max(acked.get(parts[1], 0), int(parts[2]))
    missing = 0
    for task_id, version in acked.items():
        stored = await store.get_task(task_id)
        if stored is None or stored.version < version:
            missing += 1
    console.print(
        f"killed pid {child.pid} after {sum(acked.values())} acknowledged appends "
        f"to {len(acked)} tasks; acknowledged events missing after the crash: "
        f"[{'green' if missing == 0 else 'red'}]{missing}[/]"
    )
    orphans = [
        t for t in await store.list_tasks() if t.worker_id == "doomed-worker" and t.is_active
    ]
    for task in orphans:  # the recovery decision the runtime records for a dead owner
        await store.append(
            task.id,
            [NewEvent(TaskRequeued(), actor="system", reason="owner doomed-worker died (SIGKILL)")],
            expected_version=task.version,
        )
    console.print(
        f"tasks left running by the dead worker, re-queued with a logged reason: {len(orphans)}"
    )


async def _tamper(path: Path, copy: Path, console: Console) -> None:
    """Edit one byte of a payload in a copy of the database and let verify() find it."""
    copy.unlink(missing_ok=True)
    with (
        contextlib.closing(sqlite3.connect(path)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
        target.execute("DROP TRIGGER events_append_only_update")
        seq = target.execute(
            "SELECT seq FROM events WHERE type = 'task.failed' LIMIT 1"
        ).fetchone()[0]
        target.execute(
            "UPDATE events SET data = replace(data, 'timed out', 'timed_out') WHERE seq = ?",
            (seq,),
        )
        target.commit()
    console.print(f"in a copy, one byte of event #{seq} was changed with the trigger dropped")
    async with SQLiteEventStore(copy) as tampered:
        try:
            await tampered.verify()
        except TamperedLogError as err:
            console.print(f"verify(): [red]{err}[/]")
