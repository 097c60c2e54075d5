"""One run of ``tasktrail mcp``: the manager (with its in-process worker, or launch-only),
the MCP server over stdio or streamable HTTP, and a clean stop on SIGINT / SIGTERM or when
the client goes away (running tasks are re-queued, never left ``running``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import anyio
from mcp.server import Server
from mcp.server.stdio import stdio_server

from tasktrail.cli._app import on_signals
from tasktrail.cli._config import SHELL_AGENT, Config
from tasktrail.errors import ConfigError
from tasktrail.mcp._bridge import Bridge
from tasktrail.mcp._http import HttpOptions, serve_http
from tasktrail.mcp._server import build_server
from tasktrail.runtime.client import AsyncClient
from tasktrail.runtime.context import Runner
from tasktrail.runtime.manager import TaskManager

__all__ = ["PipeLines", "ServeOptions", "launchable_agents", "serve", "served"]

logger = logging.getLogger("tasktrail.mcp")

Announce = Callable[[str], None]


def _to_stderr(line: str) -> None:
    print(f"tasktrail mcp: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServeOptions:
    """What ``tasktrail mcp`` was asked to do."""

    database: str
    config: Config = field(default_factory=Config)
    worker: bool = True
    """Run tasks in this process (else only launch them, for separate workers)."""
    max_running: int | None = None
    """Tasks the in-process worker runs at once (default: the config's worker.max_running)."""
    allow_agents: tuple[str, ...] = ()
    """Agents launchable although the config does not define them (only ``shell``)."""
    http: HttpOptions | None = None
    """Serve streamable HTTP with these options; ``None``: stdio."""


def launchable_agents(config: Config, allow: tuple[str, ...] = ()) -> dict[str, str]:
    """The agents a tool call may launch, with their descriptions: the config's agents,
    and the built-in ``shell`` only when allowed explicitly."""
    for name in allow:
        if name != SHELL_AGENT and name not in config.agents:
            raise ConfigError(
                config.path or "tasktrail.toml",
                f"--allow-agent {name}: only the built-in {SHELL_AGENT!r} agent is allowed this "
                f"way; define {name!r} as [agents.{name}] in the config",
            )
    agents = {name: agent.description for name, agent in config.agents.items()}
    if SHELL_AGENT in allow and SHELL_AGENT not in agents:
        agents[SHELL_AGENT] = "runs the prompt as a shell command (/bin/sh -c)"
    return agents


def _runners(config: Config, agents: Mapping[str, str]) -> dict[str, Runner]:
    every = config.runners()
    return {name: every[name] for name in agents}


class PipeLines:
    """The lines of standard input, read by the event loop rather than by a thread, so a
    signal can stop the server while the client keeps its end of the pipe open (the
    SDK's thread, blocked in a read, would hold the process until the client wrote)."""

    LIMIT: Final = 16 << 20
    """The longest line (one JSON-RPC message) accepted: 4 times what HTTP accepts."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    @classmethod
    async def open(
        cls, fd: int | None = None, *, limit: int = LIMIT
    ) -> tuple[PipeLines, asyncio.BaseTransport] | None:
        """The lines of ``fd`` (standard input), or ``None`` when it is not a pipe (a
        file, a terminal): then the SDK reads it its own way."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit)
        try:
            pipe = os.fdopen(os.dup(sys.stdin.fileno() if fd is None else fd), "rb", buffering=0)
        except (OSError, ValueError, AttributeError):
            return None
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        except (OSError, ValueError):
            pipe.close()
            return None
        return cls(reader), transport

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than the limit: dropped, and answered as unparsable
            logger.warning("a message over %d bytes on standard input was dropped", self.LIMIT)
            return "\n"
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


async def _serve_stdio(server: Server[Any]) -> None:
    opened = await PipeLines.open()
    stdin = cast("anyio.AsyncFile[str] | None", None if opened is None else opened[0])
    try:
        async with stdio_server(stdin=stdin) as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        if opened is not None:
            opened[1].close()


@contextlib.asynccontextmanager
async def served(options: ServeOptions) -> AsyncIterator[Server[Any]]:
    """The MCP server of ``options``, its client open (and its worker running) inside.

    The config's deadlines and attempts are the defaults of every task launched here, and
    are recorded in the task, so any worker enforces them.
    """
    config = options.config
    agents = launchable_agents(config, options.allow_agents)
    settings = config.worker.manager_settings()
    if options.max_running is not None:
        settings["max_running"] = options.max_running
    client: AsyncClient
    if options.worker:
        manager = TaskManager(options.database, limits=config.limits, **settings)
        for name, runner in _runners(config, agents).items():
            manager.register(name, runner)
        client = manager
    else:
        client_settings = (
            "poll_interval",
            "max_attempts",
            "task_ttl",
            "queue_timeout",
            "run_timeout",
        )
        client = AsyncClient(options.database, **{name: settings[name] for name in client_settings})
    async with client:
        yield build_server(Bridge(client, agents=agents))


def _describe(options: ServeOptions) -> str:
    agents = launchable_agents(options.config, options.allow_agents)
    launch = ", ".join(sorted(agents)) or "none (define agents in tasktrail.toml)"
    if options.worker:
        most = options.max_running or options.config.worker.max_running
        what = f"an in-process worker runs up to {most} at once"
    else:
        what = "no worker here (--no-worker): separate `tasktrail worker`s run the tasks"
    return f"database {options.database}; agents: {launch}; {what}"


async def serve(options: ServeOptions, *, announce: Announce = _to_stderr) -> None:
    """Serve until the client goes away (stdio), or SIGINT / SIGTERM."""
    stop = asyncio.Event()

    def stopping(number: int) -> None:
        requeue = "; running tasks are re-queued" if options.worker else ""
        announce(f"{signal.Signals(number).name}: stopping{requeue}")
        stop.set()

    with on_signals(stopping, signal.SIGINT, signal.SIGTERM):
        async with served(options) as server:
            announce(_describe(options))
            if options.http is None:
                serving = asyncio.create_task(_serve_stdio(server))
            else:
                serving = asyncio.create_task(serve_http(server, options.http, stop, announce))
            waiting = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                if options.http is None:
                    serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
    announce("stopped")
