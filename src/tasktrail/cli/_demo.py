"""``tasktrail demo``: the whole product at work on a real database, in a few seconds.

Nothing is faked but the agents' work: each agent is a small Python script run by the
real ``tasktrail worker`` command in a separate process, through the real
``SubprocessRunner``, on a real SQLite file. The demo itself is a third process that
submits, watches and cancels through :class:`~tasktrail.TaskManager`, like any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tasktrail.cli._app import console as terminal
from tasktrail.cli._app import main, run_async
from tasktrail.cli._format import FittedTable, history_table, state, task_table
from tasktrail.errors import TamperedLogError, TasktrailError
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task, fold
from tasktrail.runtime.manager import TaskManager
from tasktrail.store import open_store

__all__ = ["run_demo"]

_AGENTS = ("researcher", "coder", "reviewer")
_DEADLINE = 90.0
"""Seconds after which the demo gives up (it takes about 10)."""

# A pretend agent: thinks aloud for a few seconds; a prompt with "(fails)" fails with exit
# code 3 and a line on stderr; "(long)" runs until it is stopped.
_AGENT_SCRIPT = textwrap.dedent(
    """
    import random, sys, time
    prompt, agent = sys.argv[1], sys.argv[2]
    rng = random.Random(prompt)
    steps = 10_000 if "(long)" in prompt else rng.randint(8, 14)
    for step in range(steps):
        print(f"{agent}: step {step + 1}: thinking about {prompt!r}", flush=True)
        time.sleep(rng.uniform(0.1, 0.3))
        if "(fails)" in prompt and step == 3:
            print("error: tool 'search' timed out", file=sys.stderr, flush=True)
            sys.exit(3)
    print(f"{agent}: done", flush=True)
    """
)


def _write_config(directory: Path) -> Path:
    script = directory / "agent.py"
    script.write_text(_AGENT_SCRIPT)
    agents = "\n".join(
        f'[agents.{name}]\ncommand = ["{sys.executable}", "{script}", "{{prompt}}", "{name}"]\n'
        for name in _AGENTS
    )
    config = directory / "tasktrail.toml"
    config.write_text(
        "[worker]\nmax_running = 3\npoll_interval = 0.2\nmax_attempts = 2\n"
        f"retry_backoff = 0.5\ncancel_grace = 1.0\nlease_timeout = 5.0\n\n{agents}"
    )
    return config


async def _start_worker(path: Path, config: Path, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tasktrail", "worker", "--db", str(path), "--config", str(config),
        "--worker-id", name, "--quiet",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def run_demo(*, keep: str | None, task_count: int, console: Console) -> None:
    """Run the whole demonstration, printing each step."""
    started = time.monotonic()
    directory = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="tasktrail-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    config = _write_config(directory)
    console.print(f"[bold]tasktrail demo[/]: database {path}, agents in {config}")

    async with TaskManager(path, run_tasks=False, poll_interval=0.2) as tm:
        console.rule(f"1. {task_count} agent tasks, 3 at a time, in a worker process")
        ids = [f"task-{n:02d}" for n in range(task_count)]
        fail_id, cancel_id = ids[1], ids[2]
        for n, task_id in enumerate(ids):
            agent = _AGENTS[n % len(_AGENTS)]
            extra = " (fails)" if task_id == fail_id else " (long)" if task_id == cancel_id else ""
            await tm.launch(
                agent, f"step {n} of the plan{extra}", task_id=task_id,
                description=f"{agent}: step {n}{extra}",
                max_attempts=1 if task_id == fail_id else 2,
            )  # fmt: skip
        story = await _watch(tm, path, config, ids, (fail_id, cancel_id), console)

        console.rule("2. The crash")
        console.print(
            f"worker-A was killed with SIGKILL while running {', '.join(story.orphans)}; "
            f"events committed before the kill: {len(story.committed)}, "
            f"acknowledged events missing after the crash: "
            f"[{'green' if not story.missing else 'red'}]{len(story.missing)}[/]"
        )
        for task_id in story.orphans:
            events = await tm.history(task_id)
            decision = next(
                (e for e in events if e.reason and e.reason.startswith("recovery:")), None
            )
            if decision is not None:
                console.print(f"  {task_id}: [cyan]{decision.type}[/], {decision.reason}")

        shown = story.orphans[0] if story.orphans else fail_id
        console.rule(f"3. Replaying {shown}, event by event")
        events = await tm.history(shown)
        steps_only = [e for e in events if e.type != "task.output"]
        console.print(
            history_table(
                steps_only,
                width=console.width,
                title=f"timeline of {shown} ({len(events) - len(steps_only)} output events "
                f"not shown: tasktrail logs {shown})",
            )
        )
        steps = Table(title=f"{shown}, rebuilt from its log after each event")
        for column in ("version", "event", "state", "attempt", "worker"):
            steps.add_column(column)
        task: Task | None = None
        for event in events:
            task = fold(task, event)
            if event.type != "task.output":
                steps.add_row(
                    str(event.version), event.type, state(task), str(task.attempt),
                    task.worker_id or "-",
                )  # fmt: skip
        console.print(steps)
        failed = await tm.get_task(fail_id)
        if failed is not None:
            console.print(
                f"{fail_id} {failed.state.value} after {failed.attempt} attempts, "
                f"exit code {failed.exit_code}: {failed.error}"
            )

        console.rule("4. The hash chain")
        report = await tm.verify()
        console.print(
            f"[green]verified[/] {report.events} events; head #{report.head_sequence} "
            f"{report.head_hash[:16]}..."
        )
        stale = await tm.store.check_projection()
        console.print(f"projection compared with a fresh fold of the log: {len(stale)} differences")
    await _tamper(path, directory / "tampered.db", console)
    console.rule()
    console.print(
        f"done in {time.monotonic() - started:.1f} s. Look around:\n"
        f"  tasktrail ls --db {path}\n"
        f"  tasktrail history {shown} --db {path}\n"
        f"  tasktrail replay {shown} --db {path}\n"
        f'  sqlite3 {path} "SELECT seq, stream_id, type, data FROM events LIMIT 5"',
        soft_wrap=True,  # commands to copy: never wrapped
    )


class _Story:
    """What happened while the tasks ran, for the summary."""

    def __init__(self) -> None:
        self.orphans: list[str] = []
        self.committed: dict[str, int] = {}
        self.missing: list[str] = []


async def _watch(
    tm: TaskManager,
    path: Path,
    config: Path,
    ids: list[str],
    special: tuple[str, str],
    console: Console,
) -> _Story:
    """Run the tasks in worker-A, cancel one, kill worker-A, recover in worker-B."""
    fail_id, cancel_id = special
    story = _Story()
    workers = {"worker-A": await _start_worker(path, config, "worker-A")}
    notes: list[str] = ["worker-A started (a separate process)"]
    phase = "cancel"
    moment = time.monotonic()
    deadline = moment + _DEADLINE

    def view(tasks: list[Task]) -> FittedTable:
        table = task_table(tasks, width=console.width, title="tasks (live, from the projection)")
        if console.is_terminal:
            table.caption = " | ".join(notes[-3:])
        return table

    try:
        with Live(view([]), console=console, refresh_per_second=8) as live:
            while True:
                tasks = await tm.store.get_tasks(ids)
                by_id = {t.id: t for t in tasks}
                live.update(view(tasks))
                if all(t.is_terminal for t in tasks):
                    break
                if time.monotonic() > deadline:
                    raise TasktrailError("the demo took too long; the database is at " + str(path))
                running_a = [
                    t.id for t in tasks
                    if t.state is TaskState.RUNNING and t.worker_id == "worker-A"
                ]  # fmt: skip
                if phase == "cancel" and by_id[cancel_id].state is TaskState.RUNNING:
                    await tm.cancel(cancel_id)
                    notes.append(f"cancel of {cancel_id} requested from this process")
                    phase = "kill"
                elif (
                    phase == "kill"
                    and by_id[cancel_id].is_terminal
                    and by_id[fail_id].is_terminal
                    and sum(t.state is TaskState.COMPLETED for t in tasks) >= 1
                    and len(running_a) >= 2
                ):
                    story.committed = await _committed(tm)
                    workers["worker-A"].send_signal(signal.SIGKILL)
                    await workers["worker-A"].wait()
                    story.orphans = running_a
                    notes.append(f"worker-A killed (SIGKILL) running {len(running_a)} tasks")
                    phase, moment = "dead", time.monotonic()
                elif phase == "dead" and time.monotonic() - moment > 1.0:
                    workers["worker-B"] = await _start_worker(path, config, "worker-B")
                    notes.append("worker-B started: recovers worker-A's tasks")
                    phase = "recover"
                await asyncio.sleep(0.15)
        console.line()
        for note in notes:
            console.print(f"- {note}")
    finally:
        for process in workers.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 15)
    after = await _committed(tm)
    story.missing = [eid for eid, seq in story.committed.items() if after.get(eid) != seq]
    return story


async def _committed(tm: TaskManager) -> dict[str, int]:
    """Every event id in the log with its sequence number."""
    seen: dict[str, int] = {}
    after = 0
    while events := await tm.store.read_all(after=after, limit=5000):
        seen.update((e.event_id, e.sequence) for e in events)
        after = events[-1].sequence
    return seen


async def _tamper(path: Path, copy: Path, console: Console) -> None:
    """Edit one byte of a payload in a copy of the database and let verify() find it."""
    console.rule("5. Tampering")
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
    async with open_store(copy) as tampered:
        try:
            await tampered.verify()
        except TamperedLogError as err:
            console.print(f"verify(): [red]{err}[/]")


@main.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the demo's database and config in this directory.",
)
@click.option(
    "--tasks",
    "task_count",
    metavar="N",
    type=click.IntRange(4, 100),
    default=8,
    show_default=True,
    help="How many simulated agent tasks.",
)
def demo(keep: str | None, task_count: int) -> None:
    """Show tasktrail at work in about 10 seconds, with nothing to set up.

    Agent tasks run in a worker process, 3 at a time; one fails, one is cancelled; the
    worker is killed with SIGKILL and a new one recovers its tasks; then a task's timeline
    is replayed and the hash chain verified.

    \b
    Example:
      tasktrail demo
      tasktrail demo --keep ./demo && tasktrail ls --db ./demo/demo.db
    """
    run_async(run_demo)(keep=keep, task_count=task_count, console=terminal())
