"""The ``tasktrail`` command group and what every command shares.

Every command reads its database from ``--db PATH``, else ``$TASKTRAIL_DB``, else
``tasktrail.db`` in the current directory. A tasktrail error ends the command with one
line on stderr and an exit code naming its kind (see :data:`EXIT_CODES`), never a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import click
from click.shell_completion import CompletionItem
from rich.console import Console

from tasktrail.cli._json import dumps
from tasktrail.errors import (
    CorruptDatabaseError,
    IllegalTransitionError,
    InvalidInputError,
    ReadOnlyStorageError,
    StorageBusyError,
    StorageError,
    TamperedLogError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TasktrailError,
    WaitTimeoutError,
)
from tasktrail.projection import Task
from tasktrail.store import EventStore, open_store

__all__ = [
    "CLI_POLL",
    "DEFAULT_DB",
    "EXIT_CODES",
    "config_option",
    "console",
    "database",
    "db_option",
    "emit_json",
    "existing",
    "exit_code_for",
    "json_option",
    "main",
    "on_signals",
    "open_existing",
    "renamed",
    "resolve_id",
    "resolve_task",
    "run_async",
    "task_id_argument",
    "task_ids_argument",
]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DB: Final = "tasktrail.db"

CLI_POLL: Final = 0.2
"""Seconds between checks for what other processes did, in commands a person waits on
(wait, cancel --wait, logs --follow, a worker's catch-up)."""

EXIT_CODES: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (TaskNotFoundError, 3),
    (IllegalTransitionError, 4),
    (TamperedLogError, 5),
    (CorruptDatabaseError, 6),
    (ReadOnlyStorageError, 7),
    (StorageBusyError, 8),
    (StorageError, 9),
    (TaskFailedError, 11),
    (TaskCancelledError, 12),
    (WaitTimeoutError, 13),
    (InvalidInputError, 2),
    (TasktrailError, 1),
)
"""Exit code by error kind; the first matching class wins. 2 is also click's usage error,
10 is ``verify`` finding a stale projection, 130 an interrupt (Ctrl-C)."""


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of a tasktrail error."""
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


def run_async(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command body; turn a tasktrail error into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except TasktrailError as err:
            click.echo(f"tasktrail: error: {err}", err=True)
            sys.exit(exit_code_for(err))
        except KeyboardInterrupt:
            click.echo("tasktrail: interrupted", err=True)
            sys.exit(130)

    return wrapper


def database(db: str | None) -> str:
    """The database the command uses: the command's ``--db``, else the one given before
    the command (``tasktrail --db X ls``), else ``$TASKTRAIL_DB``, else ./tasktrail.db.

    An empty ``--db`` or ``$TASKTRAIL_DB`` is refused (InvalidInputError), never taken to
    mean the default.
    """
    if db is None:
        db = _group_db()
    if db is not None:
        if not db.strip():
            raise InvalidInputError("--db is empty: pass a database file or a postgresql:// URL")
        return db
    from_env = os.environ.get("TASKTRAIL_DB")
    if from_env is not None:
        if not from_env.strip():
            raise InvalidInputError(
                "TASKTRAIL_DB is set but empty: set it to a database file or a postgresql:// "
                "URL, or unset it to use ./" + DEFAULT_DB
            )
        return from_env
    return DEFAULT_DB


def _group_db() -> str | None:
    """The ``--db`` given before the command, if any."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    value = ctx.find_root().params.get("db")
    return value if isinstance(value, str) else None


def is_url(target: str) -> bool:
    """Whether ``target`` is a database URL (``scheme://...``) rather than a file path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", target) is not None


def existing(db: str | None) -> str:
    """The database target, checked to exist: only ``submit``, ``run`` and ``worker``
    create a database."""
    target = database(db)
    if not is_url(target) and not Path(target).exists():
        raise StorageError(f"no database at {target}; pass --db PATH or set TASKTRAIL_DB")
    return target


def open_existing(db: str | None) -> EventStore:
    """The store of an existing database."""
    return open_store(existing(db))


_SHOWN_MATCHES: Final = 10


async def resolve_task(store: EventStore, text: str) -> Task:
    """The task ``text`` names: its id, or an unambiguous prefix of its id.

    TaskNotFoundError when none matches; InvalidInputError listing the candidates when
    the prefix fits several.
    """
    task = await store.get_task(text)
    if task is not None:
        return task
    found = await store.list_tasks(id_prefix=text, limit=_SHOWN_MATCHES + 1)
    if not found:
        raise TaskNotFoundError(text)
    if len(found) == 1:
        return found[0]
    total = await store.count_tasks(id_prefix=text, limit=10_000)
    names = ", ".join(t.id for t in found[:_SHOWN_MATCHES])
    more = (
        f" and {total - _SHOWN_MATCHES:,}{'+' if total == 10_000 else ''} more"
        if (total > _SHOWN_MATCHES)
        else ""
    )
    raise InvalidInputError(
        f"task id prefix {text!r} fits {total:,}{'+' if total == 10_000 else ''} tasks: "
        f"{names}{more}; type more of the id"
    )


async def resolve_id(store: EventStore, text: str) -> str:
    """The id of the task ``text`` names (see :func:`resolve_task`)."""
    return (await resolve_task(store, text)).id


def renamed(new_value: T | None, old_value: T | None, *, old: str, new: str) -> T | None:
    """The value of an option given by its new name or its old one (kept hidden for one
    release; using it prints a line on stderr)."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise click.UsageError(f"{old} is the old name of {new}: give one of them")
    click.echo(f"tasktrail: {old} is now {new} (the old name goes in the next release)", err=True)
    return old_value


def emit_json(value: Any) -> None:
    """Print ``value`` as one line of JSON under the command line's convention (every field,
    times in ISO 8601 UTC: see :mod:`tasktrail.cli._json`)."""
    click.echo(dumps(value))


PIPED_WIDTH: Final = 160
"""Columns of a table written to a pipe or a file, unless ``$COLUMNS`` says otherwise."""


def console(*, stderr: bool = False) -> Console:
    """A rich console: colour only on a terminal (and never with ``NO_COLOR``); the
    terminal's width, else ``$COLUMNS``, else :data:`PIPED_WIDTH` when piped."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not _isatty(stream) and not os.environ.get("COLUMNS", "").isdigit():
        width = PIPED_WIDTH
    return Console(highlight=False, stderr=stderr, width=width)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


db_option = click.option(
    "--db",
    metavar="PATH",
    default=None,
    help=f"Database file or postgresql:// URL [default: $TASKTRAIL_DB, else ./{DEFAULT_DB}].",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (stable field names) instead of a table."
)
config_option = click.option(
    "--config",
    metavar="FILE",
    default=None,
    help="Agents and worker settings [default: $TASKTRAIL_CONFIG, ./tasktrail.toml, "
    "~/.config/tasktrail/tasktrail.toml].",
)


@contextlib.contextmanager
def on_signals(handler: Callable[[int], None], *signals: int) -> Iterator[None]:
    """Call ``handler(signum)`` from the event loop on each of ``signals``."""
    loop = asyncio.get_running_loop()
    for number in signals:
        loop.add_signal_handler(number, handler, number)
    try:
        yield
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


def _complete_task_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of task ids: the newest tasks of the database, with their state."""
    try:
        target = database(ctx.params.get("db"))
    except TasktrailError:
        return []
    if not is_url(target) and not Path(target).exists():
        return []

    async def newest() -> list[Task]:
        async with open_store(target) as store:
            return await store.list_tasks(newest_first=True, limit=500)

    try:
        tasks = asyncio.run(newest())
    except TasktrailError:
        return []
    return [
        CompletionItem(t.id, help=f"{t.state.value}: {t.description or t.prompt[:50]}")
        for t in tasks
        if t.id.startswith(incomplete)
    ]


task_id_argument = click.argument("task_id", shell_complete=_complete_task_ids)


def task_ids_argument(*, required: bool) -> Callable[[F], F]:
    """One or more task ids, completed from the database."""
    return click.argument(
        "task_ids", nargs=-1, required=required, shell_complete=_complete_task_ids
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tasktrail")
@click.option(
    "--db",
    metavar="PATH",
    default=None,
    help="Database file or postgresql:// URL for the command (its own --db wins) "
    f"[default: $TASKTRAIL_DB, else ./{DEFAULT_DB}].",
)
def main(db: str | None) -> None:
    """tasktrail: durable background tasks on an append-only, hash-chained event log.

    Submit shell commands or agent CLIs, run them in workers that survive kill -9, and
    inspect, replay and verify every step they took.

    \b
    Example:
      tasktrail demo                                # the whole product in ~10 s
      tasktrail submit shell 'sleep 5; echo done'   # prints the task id
      tasktrail worker                              # runs tasks until Ctrl-C
      tasktrail history TASK_ID                     # every step, with actor and reason
      tasktrail --db /srv/tasks.db ls               # --db before the command, or after it
    """
