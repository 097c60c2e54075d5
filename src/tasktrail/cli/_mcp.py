"""``tasktrail mcp``: the MCP server command. The ``mcp`` SDK (the ``[mcp]`` extra) is
imported only when the command runs, so the rest of the CLI works without it."""

from __future__ import annotations

import os

import click

from tasktrail.cli._app import config_option, database, db_option, main, run_async
from tasktrail.cli._config import load_config
from tasktrail.errors import InvalidInputError, TasktrailError

__all__ = ["MISSING_EXTRA"]

MISSING_EXTRA = "install it with: pip install 'tasktrail[mcp]'"
_SDK_MODULES = frozenset({"mcp", "mcp_types", "pydantic", "pydantic_core", "starlette", "uvicorn"})


@main.command(name="mcp")
@db_option
@config_option
@click.option("--http", is_flag=True, help="Serve streamable HTTP (with a token), not stdio.")
@click.option("--host", default=None, help="With --http: the address [default: 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(0, 65535), metavar="N", default=None,
    help="With --http: the port; 0 picks a free one [default: 8765].",
)  # fmt: skip
@click.option(
    "--allow-origin", "allow_origins", multiple=True, metavar="URL",
    help="With --http: a web origin allowed besides this machine's own.",
)  # fmt: skip
@click.option(
    "--no-worker", is_flag=True,
    help="Only launch and inspect tasks; separate `tasktrail worker`s run them.",
)  # fmt: skip
@click.option(
    "--max-running", type=click.IntRange(min=1), metavar="N", default=None,
    help="Tasks the in-process worker runs at once [default: worker.max_running, else 4].",
)  # fmt: skip
@click.option(
    "--allow-agent", "allow_agents", multiple=True, metavar="NAME",
    help="Also let tools launch this built-in agent (only `shell`: any command).",
)  # fmt: skip
@run_async
async def mcp(
    db: str | None, config: str | None, http: bool, host: str | None, port: int | None,
    allow_origins: tuple[str, ...], no_worker: bool, max_running: int | None,
    allow_agents: tuple[str, ...],
) -> None:  # fmt: skip
    """Serve background tasks to AI agents over the Model Context Protocol.

    Tools: launch_task, run_task, task_status, task_output, wait_task, cancel_task,
    list_tasks, task_history. Only the agents of tasktrail.toml can be launched (and
    `shell` with --allow-agent shell); every write is logged with the actor
    mcp:<client name>. A worker in this process runs the tasks; when the client goes
    away or on SIGTERM it stops and re-queues what is running. With --http the server
    listens on 127.0.0.1 and needs the bearer token it prints ($TASKTRAIL_MCP_TOKEN to
    choose it).

    \b
    Example:
      claude mcp add tasktrail -- tasktrail mcp --db ~/tasks.db
      tasktrail mcp --allow-agent shell
      tasktrail mcp --http --port 8765
      tasktrail mcp --no-worker
    """
    if not http and (host is not None or port is not None or allow_origins):
        raise InvalidInputError("--host, --port and --allow-origin need --http")
    if no_worker and max_running is not None:
        raise InvalidInputError("--max-running sets the in-process worker: omit --no-worker")
    try:
        from tasktrail.mcp._http import TOKEN_ENV, HttpOptions, new_token
        from tasktrail.mcp._serve import ServeOptions, serve
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] not in _SDK_MODULES:
            raise
        raise TasktrailError(
            f"tasktrail mcp needs the MCP Python SDK ({err}); {MISSING_EXTRA}"
        ) from err
    settings = load_config(config)
    web = None
    if http:
        token = os.environ.get(TOKEN_ENV) or new_token()
        web = HttpOptions(
            token=token,
            host=host or "127.0.0.1",
            port=8765 if port is None else port,
            allowed_origins=allow_origins,
        )
    await serve(
        ServeOptions(
            database=database(db),
            config=settings,
            worker=not no_worker,
            max_running=max_running,
            allow_agents=allow_agents,
            http=web,
        )
    )
