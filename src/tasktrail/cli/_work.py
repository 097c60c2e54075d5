"""Commands that create and run tasks: submit, run, wait, cancel, rerun.

Every write says who made it: ``user:<login name>`` (``$TASKTRAIL_ACTOR`` overrides it),
and why, with ``--reason``.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import click
import msgspec

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
    renamed,
    resolve_id,
    run_async,
    task_ids_argument,
)
from tasktrail.cli._config import load_config
from tasktrail.cli._inspect import print_output, waiting_notes
from tasktrail.cli._progress import progress
from tasktrail.cli._times import parse_duration, parse_moment
from tasktrail.cli._worker import load_app
from tasktrail.errors import (
    InvalidInputError,
    TaskCancelledError,
    TaskFailedError,
    WaitTimeoutError,
)
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime.client import AsyncClient
from tasktrail.runtime.manager import TaskManager

__all__ = ["cli_actor", "run_exit_code"]

F = TypeVar("F", bound=Callable[..., Any])

_LIVE_STATES: Final = ("pending", "starting", "running")
_CLI_POLL = 0.2
"""Seconds between checks for what other processes did, in commands a person waits on."""


def cli_actor() -> str:
    """Who writes from this command line: ``$TASKTRAIL_ACTOR``, else ``user:<login>``."""
    explicit = os.environ.get("TASKTRAIL_ACTOR")
    if explicit:
        return explicit
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container with an unnamed uid)
        return f"user:{os.getuid()}"


def read_input(text: str | None) -> Any:
    """``--input``: JSON text, or ``@FILE`` holding JSON (``None``: no input)."""
    if text is None:
        return None
    source = "--input"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as err:
            raise InvalidInputError(f"cannot read {source}: {err.strerror or err}") from err
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as err:
        raise InvalidInputError(f"{source} is not valid JSON: {err}") from err


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
        input_text: str | None,
        delay: str | None,
        at: str | None,
        reason: str | None,
        **kwargs: Any,
    ) -> Any:
        if delay is not None and at is not None:
            raise click.UsageError("give --in or --at, not both")
        not_before: Any = None
        if delay is not None:
            not_before = parse_duration(delay)
        elif at is not None:
            not_before = parse_moment(at)
        launch = {
            "task_id": task_id or new_task_id(), "description": description,
            "parent_id": parent, "priority": priority, "concurrency_key": key,
            "max_attempts": max_attempts, "input": read_input(input_text),
            "not_before": not_before, "reason": reason,
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
            type=click.IntRange(min=1, max=1_000_000),
            metavar="N",
            default=None,
            help="Attempts in all [default: worker.max_attempts of the config, else 1].",
        ),
        click.option(
            "--input",
            "input_text",
            default=None,
            metavar="JSON|@FILE",
            help="The task's input: JSON, or @FILE holding JSON ({input} in commands).",
        ),
        click.option(
            "--in",
            "delay",
            default=None,
            metavar="DURATION",
            help="Start no sooner than this from now (90, 10m, 2h, 1d).",
        ),
        click.option(
            "--at",
            "at",
            default=None,
            metavar="TIME",
            help="Start no sooner than this time (ISO 8601, time of day, or Unix).",
        ),
        click.option("--reason", default=None, help="Why, for the log."),
    ]
    wrapped: Any = collected
    for option in reversed(options):
        wrapped = option(wrapped)
    return cast(F, wrapped)


def new_task_id() -> str:
    """A fresh task id: 12 hex digits, short enough to type (``--id`` picks your own)."""
    return uuid.uuid4().hex[:12]


def read_prompt(words: tuple[str, ...], *, input_given: bool = False) -> str:
    """The prompt: the words joined by spaces, or standard input for a single ``-``.

    It may be empty only when the task has an input instead."""
    text = sys.stdin.read() if words == ("-",) else " ".join(words)
    if not text.strip() and not input_given:
        raise InvalidInputError(
            "give a prompt (or - to read it from standard input), or an --input"
        )
    return text


@main.command()
@click.argument("agent")
@click.argument("prompt", nargs=-1)
@db_option
@config_option
@launch_options
@click.option(
    "--app", "apps", multiple=True, metavar="MODULE:OBJECT",
    help="Python agents defined on this Registry count as known (repeat).",
)  # fmt: skip
@click.option("--any-agent", is_flag=True, help="Accept an agent no config or --app defines.")
@json_option
@run_async
async def submit(
    agent: str,
    prompt: tuple[str, ...],
    db: str | None,
    config: str | None,
    launch: dict[str, Any],
    apps: tuple[str, ...],
    any_agent: bool,
    as_json: bool,
) -> None:
    """Queue a task for a worker and print its id (creates the database if needed).

    The agent is `shell` (the prompt is a shell command), one defined in tasktrail.toml, or
    a Python agent of an --app registry (served by `tasktrail worker --app ...`).

    \b
    Example:
      tasktrail submit shell 'sleep 30; echo done'
      ID=$(tasktrail submit shell 'make test' --max-attempts 3)
      echo 'Summarise the README' | tasktrail submit claude -
      tasktrail submit resize --input '{"image": "a.png"}' --in 10m
    """
    settings = load_config(config)
    if not any_agent and not any(agent in load_app(spec) for spec in apps):
        settings.check_agent(agent)
    text = read_prompt(prompt, input_given=launch["input"] is not None)
    async with AsyncClient(
        database(db), actor=cli_actor(), **settings.worker.launch_settings()
    ) as client:
        task = await client.launch(agent, text, **launch)
    if as_json:
        emit_json(task)
    else:
        click.echo(task.id)


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
    "--run-timeout", "timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
    default=None, help="Seconds the run may take; then it fails (exit 1).",
)  # fmt: skip
@click.option(
    "--timeout", "old_timeout", type=click.FloatRange(min=0, min_open=True), hidden=True,
    default=None, help="Old name of --run-timeout.",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print no status lines, only the output.")
@json_option
def run(
    agent: str,
    prompt: tuple[str, ...],
    timeout: float | None,
    old_timeout: float | None,
    **options: Any,
) -> None:
    """Run a task here in the foreground: its output streams, its exit code is yours.

    The task is logged like any other (history, replay, verify). Ctrl-C cancels it (a
    second Ctrl-C forces it). Exit code: 0 when it completed, the command's own exit code
    when it failed (128+N when signal N killed it), 1 for any other failure, 130 when it
    was cancelled.

    \b
    Example:
      tasktrail run shell 'pytest -x' && echo green
      tasktrail run claude 'Fix the failing test' --run-timeout 600
    """
    timeout = renamed(timeout, old_timeout, old="--timeout", new="--run-timeout")
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
    prompt = read_prompt(words, input_given=launch["input"] is not None)
    runners = settings.runners()
    options = settings.worker.manager_settings()
    if timeout is not None:
        options["run_timeout"] = timeout
    task_id: str = launch["task_id"]
    err = console(stderr=True)
    async with TaskManager(
        database(db), limits=settings.limits, task_ids={task_id}, actor=cli_actor(), **options
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
            cancels.append(
                asyncio.create_task(
                    tm.cancel(task_id, force=presses > 1, reason="interrupted (Ctrl-C)")
                )
            )

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

    Prints a line per task (its final state, and its error). If a task does not start
    within a few seconds because no live worker serves its agent, or its agent or key is
    paused, a line on stderr says so. Exit code: 0 when all completed, 11 when one failed,
    12 when one was cancelled (and none failed), 13 on timeout.

    \b
    Example:
      tasktrail wait $ID && echo done
      tasktrail wait $A $B --timeout 60 --json
    """
    finished: list[Task] = []
    late: WaitTimeoutError | None = None
    async with AsyncClient(existing(db), poll_interval=_CLI_POLL) as client:
        ids = [await resolve_id(client.store, task_id) for task_id in task_ids]
        try:
            async with waiting_notes(client.store, ids), asyncio.timeout(timeout):
                for task_id in ids:
                    finished.append(await client.wait(task_id))
        except TimeoutError:
            assert timeout is not None
            late = WaitTimeoutError(ids[len(finished)], timeout)
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


_UNFINISHED = click.Choice([s.value for s in TaskState if s.value in _LIVE_STATES])


@main.command()
@task_ids_argument(required=False)
@db_option
@click.option("--all", "everything", is_flag=True, help="Every unfinished task.")
@click.option("--agent", "agents", multiple=True, help="Unfinished tasks of this agent (repeat).")
@click.option(
    "--state", "states", type=_UNFINISHED, multiple=True,
    help="Tasks in this state: pending, starting or running (repeat).",
)  # fmt: skip
@click.option(
    "--older-than", default=None, metavar="DURATION",
    help="Unfinished tasks created longer ago than this (90, 10m, 2h, 1d).",
)  # fmt: skip
@click.option("--yes", "-y", is_flag=True, help="Cancel what the filters select without asking.")
@click.option("--force", is_flag=True, help="Cancelled at once; the worker kills the process.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until each task is finished.")
@click.option("--reason", default=None, help="Why, for the log [default: cancel requested].")
@json_option
@run_async
async def cancel(
    task_ids: tuple[str, ...], db: str | None, everything: bool, agents: tuple[str, ...],
    states: tuple[str, ...], older_than: str | None, yes: bool, force: bool, wait_: bool,
    reason: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Cancel tasks, and all their descendants: the ones named, or every unfinished task
    the filters select (--all, --agent, --state, --older-than; after a confirmation, or
    with --yes).

    A pending task is cancelled at once. A running one gets a cancel request: its worker
    stops the process (SIGTERM, then SIGKILL after the grace) and records `cancelled`.
    With --force it is `cancelled` at once and the worker kills the process. A finished
    task is left as it is. Prints a line per task (with --json, the task as the cancel
    left it, one per line).

    \b
    Example:
      tasktrail cancel 3f2a9c1d0e4b --reason 'wrong branch'
      tasktrail cancel 3f2a --force --wait
      tasktrail cancel --agent claude --older-than 2h --yes
      tasktrail cancel --all
    """
    filtered = everything or bool(agents or states or older_than)
    if filtered == bool(task_ids):
        raise InvalidInputError(
            "give task ids, or filters (--all, --agent, --state, --older-than), not both"
        )
    if everything and (agents or states or older_than):
        raise InvalidInputError("--all selects every unfinished task: it takes no other filter")
    async with AsyncClient(existing(db), poll_interval=_CLI_POLL, actor=cli_actor()) as client:
        if filtered:
            ids = await _select(client.store, agents, states, older_than)
            if not ids:
                click.echo("no unfinished task matches", err=True)
                return
            _confirm(len(ids), yes=yes)
        else:
            ids = [await resolve_id(client.store, task_id) for task_id in task_ids]
        tasks: list[Task] = []
        with progress("cancelling", total=len(ids), unit="tasks") as advance:
            for start in range(0, len(ids), _CANCEL_BATCH):  # one commit per batch
                batch = ids[start : start + _CANCEL_BATCH]
                tasks += await asyncio.gather(
                    *(client.cancel(task_id, force=force, reason=reason) for task_id in batch)
                )
                advance(len(batch))
        if wait_:
            tasks = [await client.wait(task.id) for task in tasks]
    for task in tasks:
        if as_json:
            emit_json(task)
        elif task.state is TaskState.CANCELLED:
            click.echo(f"{task.id}: cancelled")
        elif task.is_terminal:
            click.echo(f"{task.id}: already {task.state.value}, left as it is")
        else:
            click.echo(f"{task.id}: cancel requested ({task.state.value}; its worker stops it)")


_CANCEL_BATCH: Final = 200


async def _select(
    store: Any, agents: tuple[str, ...], states: tuple[str, ...], older_than: str | None
) -> list[str]:
    """The ids of the unfinished tasks the filters select, oldest first."""
    until = None if older_than is None else time.time() - parse_duration(older_than)
    ids: list[str] = []
    after = None
    while page := await store.list_tasks(
        state=states or _LIVE_STATES, agent=agents or None, until=until, after_id=after,
        limit=5000,
    ):  # fmt: skip
        ids += [task.id for task in page]
        after = page[-1].id
    return ids


def _confirm(count: int, *, yes: bool) -> None:
    """Ask before a bulk cancel (``--yes``: do not ask); refuse without a terminal."""
    if yes:
        return
    what = f"{count:,} unfinished task(s) (and their descendants)"
    if not sys.stdin.isatty():
        raise InvalidInputError(f"this would cancel {what}; pass --yes to do it")
    if not click.confirm(f"Cancel {what}?", default=False, err=True):
        raise click.Abort()


@main.command()
@task_ids_argument(required=True)
@db_option
@click.option("--reason", default=None, help="Why, for the log [default: rerun of ID].")
@json_option
@run_async
async def rerun(
    task_ids: tuple[str, ...], db: str | None, reason: str | None, as_json: bool
) -> None:
    """Launch a copy of each task (same agent, prompt, input and options) and print the new
    id; the copy records which task it re-runs (`show` links both ways).

    \b
    Example:
      tasktrail rerun $ID
      NEW=$(tasktrail rerun $ID --reason 'fixed the flaky test') && tasktrail wait $NEW
    """
    async with AsyncClient(existing(db), actor=cli_actor()) as client:
        ids = [await resolve_id(client.store, task_id) for task_id in task_ids]
        copies = [await client.rerun(task_id, reason=reason) for task_id in ids]
    for copy in copies:
        if as_json:
            emit_json(copy)
        else:
            click.echo(copy.id)
