"""Helpers of the MCP server tests: the server in this process (behind the SDK's in-memory
client) or as a real ``tasktrail mcp`` subprocess (behind the SDK's stdio client), and
reading tool results."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from mcp.client import Client
from mcp.types import CallToolResult, Implementation, TextContent

from mcp import ClientSession, StdioServerParameters, stdio_client
from tasktrail.cli._config import load_config
from tasktrail.mcp import ServeOptions, served

T = TypeVar("T")

CONFIG = """
[worker]
poll_interval = 0.05
cancel_grace = 1.0

[agents.echo]
command = ["/bin/echo", "echo says: {prompt}"]
description = "prints its prompt"
"""

DEADLINE = 60.0
"""Seconds any wait in these tests may take at most (a loaded 2-core machine is slow)."""


def payload(result: CallToolResult) -> dict[str, Any]:
    """The structured record of a successful tool call."""
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    """The text of a tool result's single content block."""
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def tool_error(result: CallToolResult) -> str:
    """The one-line reason of a tool error (never a traceback)."""
    assert result.is_error, result
    text = text_of(result)
    assert "\n" not in text
    assert "Traceback" not in text
    return text


def plain_env() -> dict[str, str]:
    """This environment without asyncio debug mode (which the suite turns on, and which
    reports slow steps on stderr: a process whose stderr is checked must not get it)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}


def event_count(db: Path) -> int:
    """How many events the log holds (0 when there is no database yet)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE) -> T:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def in_process(
    db: Path | str,
    config: Path,
    *,
    worker: bool = True,
    allow_shell: bool = True,
    name: str = "pytest",
    mode: str = "legacy",
    extensions: list[Any] | None = None,
) -> AsyncIterator[Client]:
    """The server in this process, and the SDK's client connected to it in memory."""
    options = ServeOptions(
        database=str(db),
        config=load_config(str(config)),
        worker=worker,
        allow_agents=("shell",) if allow_shell else (),
    )
    async with served(options) as server:
        client = Client(
            server,
            mode=mode,  # type: ignore[arg-type]
            client_info=Implementation(name=name, version="1.0"),
            extensions=extensions,
        )
        async with client:
            yield client


@asynccontextmanager
async def over_stdio(
    db: Path,
    config: Path,
    log: Path,
    *extra: str,
    name: str = "pytest",
    modern: bool = False,
    **session: Any,
) -> AsyncIterator[ClientSession]:
    """A real ``tasktrail mcp`` process, spoken to by the SDK's ``ClientSession`` over its
    stdin and stdout: the ``initialize`` handshake, as coding agents do today, or with
    ``modern`` the 2026-07-28 ``server/discover``. Its stderr goes to ``log``."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tasktrail", "mcp", "--db", str(db), "--config", str(config), *extra],
    )
    with log.open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(
                read, write, client_info=Implementation(name=name, version="1.0"), **session
            ) as client,
        ):
            await (client.discover() if modern else client.initialize())
            yield client
