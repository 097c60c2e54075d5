"""Commands that stop or repeat tasks: cancel (by id or by filter) and rerun."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Final

import click

from tasktrail.cli._app import (
    CLI_POLL,
    db_option,
    emit_json,
    existing,
    json_option,
    main,
    resolve_id,
    run_async,
    task_ids_argument,
)
from tasktrail.cli._launch import cli_actor
from tasktrail.cli._progress import progress
from tasktrail.cli._times import parse_duration
from tasktrail.errors import InvalidInputError
from tasktrail.lifecycle import LIVE_STATES, TaskState
from tasktrail.projection import Task
from tasktrail.runtime.client import AsyncClient

__all__: list[str] = []

_LIVE_STATES: Final = tuple(state.value for state in TaskState if state in LIVE_STATES)
_UNFINISHED: Final = click.Choice(_LIVE_STATES)


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
    async with AsyncClient(existing(db), poll_interval=CLI_POLL, actor=cli_actor()) as client:
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
