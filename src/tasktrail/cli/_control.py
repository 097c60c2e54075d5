"""``tasktrail pause`` and ``tasktrail resume``: hold back, then let go, the tasks of an agent
or a concurrency key, in every worker (see :mod:`tasktrail.store._controls`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.text import Text

from tasktrail.cli._app import (
    console,
    db_option,
    emit_json,
    json_option,
    main,
    open_existing,
    run_async,
)
from tasktrail.cli._launch import cli_actor
from tasktrail.cli._notes import pause_line
from tasktrail.lifecycle import ACTIVE_STATES
from tasktrail.store import EventStore

__all__: list[str] = []


def _target(agent: str | None, key: str | None) -> tuple[str, str]:
    if (agent is None) == (key is None):
        raise click.UsageError("give --agent NAME or --key KEY (one of them)")
    return ("agent", agent) if agent is not None else ("key", key)  # type: ignore[return-value]


async def _held(store: EventStore, kind: str, target: str) -> str:
    """How many tasks of an agent the pause holds back and lets run (counted to 100,000)."""
    if kind != "agent":
        return "its running tasks go on"
    pending = await store.count_tasks(agent=target, state="pending", limit=100_000)
    running = await store.count_tasks(agent=target, state=ACTIVE_STATES, limit=100_000)
    return f"{pending:,} pending task(s) wait; {running:,} running go on"


F = TypeVar("F", bound=Callable[..., Any])

_KEY_HELP = "The tasks of this concurrency key (a task's key, else its agent)."


def _with_targets(fn: F) -> F:
    """The options ``--agent``, ``--key`` and ``--reason``."""
    fn = click.option("--reason", default=None, help="Why, for the control log.")(fn)
    fn = click.option("--key", default=None, metavar="KEY", help=_KEY_HELP)(fn)
    return click.option("--agent", default=None, metavar="NAME", help="The agent's tasks.")(fn)


@main.command()
@_with_targets
@db_option
@json_option
@run_async
async def pause(
    agent: str | None, key: str | None, reason: str | None, db: str | None, as_json: bool
) -> None:
    """Stop every worker from starting tasks of an agent or a concurrency key, until
    `tasktrail resume`. Tasks already running go on to their end.

    The pause is recorded in the database's append-only control log (who, when, why),
    honoured by every worker from the moment this command returns, and shown by `stats`,
    `ls` and `show`. Prints what it paused and how many tasks it holds back.

    \b
    Example:
      tasktrail pause --agent claude --reason 'API quota spent until 14:00'
      tasktrail pause --key gpu
      tasktrail resume --agent claude
    """
    kind, target = _target(agent, key)
    async with open_existing(db) as store:
        before = {(p.kind, p.target): p for p in await store.list_pauses()}
        done = await store.pause(kind, target, actor=cli_actor(), reason=reason)
        held = await _held(store, kind, target)
    if as_json:
        emit_json(done)
        return
    out = console()
    if (kind, target) in before:
        out.print(Text(f"already: {pause_line(done)}"))
    else:
        out.print(Text(f"paused {kind} {target}: no worker starts its tasks until "
                       f"`tasktrail resume --{kind} {target}`"))  # fmt: skip
    out.print(Text(held))


@main.command()
@_with_targets
@db_option
@json_option
@run_async
async def resume(
    agent: str | None, key: str | None, reason: str | None, db: str | None, as_json: bool
) -> None:
    """Let workers start the tasks of an agent or a concurrency key again.

    Recorded in the control log; prints what it resumed (or that it was not paused). With
    --json, the control recorded, or null.

    \b
    Example:
      tasktrail resume --agent claude --reason 'quota back'
      tasktrail resume --key gpu
    """
    kind, target = _target(agent, key)
    async with open_existing(db) as store:
        done = await store.resume(kind, target, actor=cli_actor(), reason=reason)
    if as_json:
        emit_json(done)
    elif done is None:
        console().print(Text(f"{kind} {target} was not paused: nothing to resume"))
    else:
        console().print(Text(f"resumed {kind} {target}: workers start its tasks again"))
