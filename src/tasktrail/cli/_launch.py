"""What every command that launches a task shares: who writes (the actor), the launch
options (``--id``, ``--priority``, ``--input`` ...), the prompt from words or standard input.
"""

from __future__ import annotations

import functools
import getpass
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
import msgspec

from tasktrail.cli._times import parse_duration, parse_moment
from tasktrail.errors import InvalidInputError

__all__ = ["cli_actor", "launch_options", "read_prompt"]

F = TypeVar("F", bound=Callable[..., Any])


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
