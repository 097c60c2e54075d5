"""Commands that create and run tasks, and wait for them: submit, run, wait.

Every write says who made it: ``user:<login name>`` (``$TASKTRAIL_ACTOR`` overrides it),
and why, with ``--reason``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from tasktrail.cli._app import (
    CLI_POLL,
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
from tasktrail.cli._launch import cli_actor, launch_options, read_prompt
from tasktrail.cli._worker import load_app
from tasktrail.errors import (
    TaskCancelledError,
    TaskFailedError,
    WaitTimeoutError,
)
from tasktrail.lifecycle import TaskState
from tasktrail.projection import Task
from tasktrail.runtime.client import AsyncClient
from tasktrail.runtime.manager import TaskManager

__all__ = ["run_exit_code"]


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
    async with AsyncClient(existing(db), poll_interval=CLI_POLL) as client:
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
