"""Commands that create and run tasks: submit, worker, run, wait, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from tasktrail.cli._app import (
    config_option,
    console,
    database,
    db_option,
    emit_json,
    existing,
    json_option,
    main,
    on_signals,
    run_async,
    task_ids_argument,
)
from tasktrail.cli._config import Config, load_config
from tasktrail.cli._inspect import print_output
from tasktrail.errors import (
    ConfigError,
    InvalidInputError,
    TaskCancelledError,
    TaskFailedError,
    TasktrailError,
    WaitTimeoutError,
)
from tasktrail.events import RecordedEvent
from tasktrail.lifecycle import ACTIVE_STATES, TaskState
from tasktrail.projection import Task
from tasktrail.runtime.manager import TaskManager
from tasktrail.store import open_store

__all__ = ["run_exit_code"]

F = TypeVar("F", bound=Callable[..., Any])

_CLI_POLL = 0.2
"""Seconds between checks for what other processes did, in commands a person waits on."""


def launch_options(fn: F) -> F:
    """The options of a new task, shared by ``submit`` and ``run``: the command receives
    them as one ``launch`` dict of :meth:`TaskManager.launch` keywords (``task_id`` set)."""

    @functools.wraps(fn)
    def collected(
        *args: Any,
        task_id: str | None,
        description: str,
        parent: str | None,
        priority: int,
        key: str | None,
        max_attempts: int | None,
        **kwargs: Any,
    ) -> Any:
        launch = {
            "task_id": task_id or new_task_id(), "description": description,
            "parent_id": parent, "priority": priority, "concurrency_key": key,
            "max_attempts": max_attempts,
        }  # fmt: skip
        return fn(*args, launch=launch, **kwargs)

    options = [
        click.option("--id", "task_id", default=None, help="The task's id [default: random]."),
        click.option("--description", default="", help="A short description for listings."),
        click.option("--parent", default=None, metavar="TASK_ID", help="The parent task."),
        click.option("--priority", type=int, default=0, show_default=True, help="Higher first."),
        click.option("--key", default=None, help="Concurrency key [default: the agent]."),
        click.option(
            "--max-attempts",
            type=click.IntRange(min=1),
            metavar="N",
            default=None,
            help="Attempts in all [default: worker.max_attempts of the config, else 1].",
        ),
    ]
    wrapped: Any = collected
    for option in reversed(options):
        wrapped = option(wrapped)
    return cast(F, wrapped)


def new_task_id() -> str:
    """A fresh task id: 12 hex digits, short enough to type (``--id`` picks your own)."""
    return uuid.uuid4().hex[:12]


def read_prompt(words: tuple[str, ...]) -> str:
    """The prompt: the words joined by spaces, or standard input for a single ``-``."""
    text = sys.stdin.read() if words == ("-",) else " ".join(words)
    if not text.strip():
        raise InvalidInputError("give a prompt (or - to read it from standard input)")
    return text


@main.command()
@click.argument("agent")
@click.argument("prompt", nargs=-1)
@db_option
@config_option
@launch_options
@click.option("--any-agent", is_flag=True, help="Accept an agent the config does not define.")
@json_option
@run_async
async def submit(
    agent: str,
    prompt: tuple[str, ...],
    db: str | None,
    config: str | None,
    launch: dict[str, Any],
    any_agent: bool,
    as_json: bool,
) -> None:
    """Queue a task for a worker and print its id (creates the database if needed).

    The agent is `shell` (the prompt is a shell command) or one defined in tasktrail.toml.

    \b
    Example:
      tasktrail submit shell 'sleep 30; echo done'
      ID=$(tasktrail submit shell 'make test' --max-attempts 3)
      echo 'Summarise the README' | tasktrail submit claude -
    """
    settings = load_config(config)
    if not any_agent:
        settings.check_agent(agent)
    text = read_prompt(prompt)
    async with TaskManager(
        database(db), run_tasks=False, max_attempts=settings.worker.max_attempts
    ) as tm:
        task = await tm.launch(agent, text, **launch)
    if as_json:
        emit_json(task)
    else:
        click.echo(task.id)


def _runners_for(settings: Config, agents: tuple[str, ...]) -> dict[str, Any]:
    runners: dict[str, Any] = settings.runners()
    unknown = sorted(set(agents) - set(runners))
    if unknown:
        raise ConfigError(
            settings.path or "tasktrail.toml",
            f"unknown agent(s) {', '.join(map(repr, unknown))}; known: {', '.join(runners)}",
        )
    return {name: runners[name] for name in agents} if agents else runners


@main.command()
@db_option
@config_option
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), metavar="N", default=None,
    help="Tasks run at once [default: worker.max_running of the config, else 4].",
)  # fmt: skip
@click.option("--agent", "agents", multiple=True, help="Run only this agent's tasks (repeat).")
@click.option("--id", "worker_id", default=None, help="This worker's id in the log.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once no task is left to run.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print what the worker does.")
@run_async
async def worker(
    db: str | None,
    config: str | None,
    concurrency: int | None,
    agents: tuple[str, ...],
    worker_id: str | None,
    exit_when_idle: bool,
    quiet: bool,
) -> None:
    """Run queued tasks until stopped (Ctrl-C or SIGTERM).

    On stop, running tasks are stopped (SIGTERM, then SIGKILL after the grace) and
    re-queued, never left running. A worker killed outright (kill -9) leaves its tasks to
    the next worker, which re-queues or fails them with a logged reason.

    \b
    Example:
      tasktrail worker --concurrency 2
      tasktrail worker --agent shell --exit-when-idle
    """
    settings = load_config(config)
    runners = _runners_for(settings, agents)
    options = settings.worker.manager_settings()
    if concurrency is not None:
        options["max_running"] = concurrency
    stop = asyncio.Event()
    err = console(stderr=True)

    def stopping(number: int) -> None:
        if not stop.is_set():
            err.print(f"{signal.Signals(number).name}: stopping; running tasks are re-queued")
        stop.set()

    target = database(db)
    async with open_store(target) as store:  # from here on: recovery on start is reported
        reporter_start = await store.head()
    with on_signals(stopping, signal.SIGINT, signal.SIGTERM):
        async with TaskManager(
            target, limits=settings.limits, worker_id=worker_id, **options
        ) as tm:
            for name, runner in runners.items():
                tm.register(name, runner)
            err.print(
                f"worker {tm.worker_id} on {target}: agents {', '.join(runners)}; "
                f"up to {options['max_running']} at once. Ctrl-C stops it."
            )
            reporter = _Reporter(tm.worker.worker_id, reporter_start)
            following = None if quiet else asyncio.create_task(reporter.follow(tm.store))
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=options["poll_interval"])
                    if exit_when_idle and await _idle(tm, list(runners)):
                        err.print("no task left to run: stopping")
                        break
            finally:
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
        if not quiet:  # what happened while it stopped (re-queued tasks)
            async with open_store(target) as store:
                await reporter.catch_up(store)
    err.print(f"worker {tm.worker_id} stopped")


async def _idle(tm: TaskManager, agents: list[str]) -> bool:
    """Nothing queued for these agents and nothing running in this worker."""
    if await tm.store.queued_tasks(limit=1, agents=agents):
        return False
    active = await tm.store.list_tasks(state=ACTIVE_STATES)
    return not any(t.worker_id == tm.worker_id for t in active)


_REPORTED = {
    "task.claimed": "claimed",
    "task.started": "started",
    "task.completed": "[green]completed[/]",
    "task.failed": "[red]failed[/]",
    "task.cancelled": "[yellow]cancelled[/]",
    "task.requeued": "re-queued",
    "task.cancel_requested": "cancel requested",
}


class _Reporter:
    """Prints, from the log, each step of the tasks this worker claimed, and every recovery
    decision (which another worker may have made)."""

    def __init__(self, worker_id: str, after: int) -> None:
        self.worker_id = worker_id
        self.after = after
        self.mine: set[str] = set()
        self.out = console()

    async def catch_up(self, store: Any) -> None:
        """Print every step logged since the last call."""
        while events := await store.read_all(after=self.after, limit=1000):
            for event in events:
                if event.type == "task.claimed" and event.actor == self.worker_id:
                    self.mine.add(event.stream_id)
                recovered = (event.reason or "").startswith("recovery:")
                if (event.stream_id in self.mine or recovered) and event.type in _REPORTED:
                    self.out.print(_report_line(event))
            self.after = events[-1].sequence

    async def follow(self, store: Any) -> None:
        """Catch up every ``_CLI_POLL`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(_CLI_POLL)
            with contextlib.suppress(TasktrailError):  # busy: the next round catches up
                await self.catch_up(store)


def _report_line(event: RecordedEvent) -> str:
    detail = ""
    payload = event.payload
    if event.type == "task.failed":
        detail = f": {getattr(payload, 'error', '')}"
    elif event.reason and event.type != "task.cancel_requested":
        detail = f" ({event.reason})"
    elif event.type == "task.started" and getattr(payload, "session_id", None):
        detail = f" ({getattr(payload, 'session_id', '')})"
    return (
        f"{event.recorded_at.astimezone():%H:%M:%S} {event.stream_id} "
        f"{_REPORTED[event.type]}{detail}"
    )


def run_exit_code(task: Task) -> int:
    """The exit code of ``tasktrail run`` for a finished task (see the CLI reference)."""
    if task.state is TaskState.COMPLETED:
        return 0
    if task.state is TaskState.CANCELLED:
        return 130
    if task.exit_code is not None and task.exit_code > 0:
        return min(task.exit_code, 255)
    if task.exit_code is not None and task.exit_code < 0:
        return 128 + min(-task.exit_code, 127)
    return 1


@main.command()
@click.argument("agent")
@click.argument("prompt", nargs=-1)
@db_option
@config_option
@launch_options
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", default=None,
    help="Seconds the run may take; then it fails (exit 1).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print no status lines, only the output.")
@json_option
def run(agent: str, prompt: tuple[str, ...], timeout: float | None, **options: Any) -> None:
    """Run a task here in the foreground: its output streams, its exit code is yours.

    The task is logged like any other (history, replay, verify). Ctrl-C cancels it (a
    second Ctrl-C forces it). Exit code: 0 when it completed, the command's own exit code
    when it failed (128+N when signal N killed it), 1 for any other failure, 130 when it
    was cancelled.

    \b
    Example:
      tasktrail run shell 'pytest -x' && echo green
      tasktrail run claude 'Fix the failing test' --timeout 600
    """
    task = run_async(_run)(agent, prompt, timeout, **options)
    sys.exit(run_exit_code(task))


async def _run(
    agent: str,
    words: tuple[str, ...],
    timeout: float | None,
    *,
    db: str | None,
    config: str | None,
    launch: dict[str, Any],
    quiet: bool,
    as_json: bool,
) -> Task:
    settings = load_config(config)
    settings.check_agent(agent)
    prompt = read_prompt(words)
    runners = settings.runners()
    options = settings.worker.manager_settings()
    if timeout is not None:
        options["run_timeout"] = timeout
    task_id: str = launch["task_id"]
    err = console(stderr=True)
    async with TaskManager(
        database(db), limits=settings.limits, task_ids={task_id}, **options
    ) as tm:
        tm.register(agent, runners[agent])
        task = await tm.launch(agent, prompt, **launch)
        if not quiet:
            err.print(f"[dim]task {task.id} ({agent}); Ctrl-C cancels it[/]")
        presses = 0
        cancels: list[asyncio.Task[Task]] = []

        def interrupted(number: int) -> None:
            nonlocal presses
            presses += 1
            if not quiet:
                err.print("[yellow]cancelling[/]" + (" by force" if presses > 1 else ""))
            cancels.append(asyncio.create_task(tm.cancel(task_id, force=presses > 1)))

        with on_signals(interrupted, signal.SIGINT, signal.SIGTERM):
            if as_json:
                final = await tm.wait(task_id)
            else:
                final = await print_output(tm.store, task_id, follow=True, as_json=False)
    if as_json:
        emit_json(final)
    elif not quiet:
        why = f": {final.error}" if final.error else ""
        err.print(f"[dim]task {final.id} {final.state.value}{why}[/]")
    return final


@main.command()
@task_ids_argument(required=True)
@db_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=None,
    help="Give up after this many seconds.",
)
@json_option
@run_async
async def wait(
    task_ids: tuple[str, ...], db: str | None, timeout: float | None, as_json: bool
) -> None:
    """Wait until every task given is finished; another process runs them.

    Exit code: 0 when all completed, 11 when one failed, 12 when one was cancelled (and
    none failed), 13 on timeout.

    \b
    Example:
      tasktrail wait $ID && echo done
      tasktrail wait $A $B --timeout 60 --json
    """
    finished: list[Task] = []
    late: WaitTimeoutError | None = None
    async with TaskManager(existing(db), run_tasks=False, poll_interval=_CLI_POLL) as tm:
        try:
            async with asyncio.timeout(timeout):
                for task_id in task_ids:
                    finished.append(await tm.wait(task_id))
        except TimeoutError:
            assert timeout is not None
            late = WaitTimeoutError(task_ids[len(finished)], timeout)
    for task in finished:
        if as_json:
            emit_json(task)
        else:
            why = f": {task.error}" if task.error else ""
            click.echo(f"{task.id}: {task.state.value}{why}")
    if late is not None:
        raise late
    failed = [t for t in finished if t.state is TaskState.FAILED]
    if failed:
        raise TaskFailedError(failed[0].id, failed[0].error, failed[0].reason)
    cancelled = [t for t in finished if t.state is TaskState.CANCELLED]
    if cancelled:
        raise TaskCancelledError(cancelled[0].id, cancelled[0].reason)


@main.command()
@task_ids_argument(required=False)
@db_option
@click.option("--all", "everything", is_flag=True, help="Cancel every unfinished task.")
@click.option("--force", is_flag=True, help="Cancelled at once; the worker kills the process.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until each task is finished.")
@json_option
@run_async
async def cancel(
    task_ids: tuple[str, ...], db: str | None, everything: bool, force: bool, wait_: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Cancel tasks, and all their descendants.

    A pending task is cancelled at once. A running one gets a cancel request: its worker
    stops the process (SIGTERM, then SIGKILL after the grace) and records `cancelled`.
    With --force it is `cancelled` at once and the worker kills the process. A finished
    task is left as it is.

    \b
    Example:
      tasktrail cancel $ID
      tasktrail cancel $ID --force --wait
      tasktrail cancel --all
    """
    if everything == bool(task_ids):
        raise InvalidInputError("give task ids or --all (not both)")
    async with TaskManager(existing(db), run_tasks=False, poll_interval=_CLI_POLL) as tm:
        if everything:
            tasks = await tm.cancel_all(force=force)
        else:
            tasks = [await tm.cancel(task_id, force=force) for task_id in task_ids]
        if wait_:
            tasks = [await tm.wait(task.id) for task in tasks]
    for task in tasks:
        if as_json:
            emit_json(task)
        elif task.state is TaskState.CANCELLED:
            click.echo(f"{task.id}: cancelled")
        elif task.is_terminal:
            click.echo(f"{task.id}: already {task.state.value}, left as it is")
        else:
            click.echo(f"{task.id}: cancel requested ({task.state.value}; its worker stops it)")
