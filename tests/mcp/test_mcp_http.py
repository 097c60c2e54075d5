"""``tasktrail mcp --http`` as a real process: the SDK's streamable HTTP client with the
bearer token works; without it (or from a foreign origin) requests are refused and change
nothing."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import Implementation
from mcp_clients import CONFIG, DEADLINE, event_count, payload, plain_env, until

from mcp import ClientSession
from tasktrail import TaskState, open_store

LAUNCH = {
    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
    "params": {"name": "launch_task", "arguments": {"agent": "shell", "prompt": "touch pwned"}},
}  # fmt: skip


@dataclass
class Served:
    """A running ``tasktrail mcp --http`` and what it printed."""

    process: subprocess.Popen[str]
    db: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    url: str = ""
    token: str = ""
    pump: threading.Thread | None = None

    @classmethod
    def start(cls, db: Path, config: Path) -> Served:
        """Start a server on a free port; return once it printed its URL and token."""
        process = subprocess.Popen(
            [
                sys.executable, "-m", "tasktrail", "mcp", "--http", "--port", "0",
                "--db", str(db), "--config", str(config), "--allow-agent", "shell",
            ],
            cwd=db.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=plain_env(),
        )  # fmt: skip
        server = cls(process, db)
        server.pump = threading.Thread(target=server._read, daemon=True)
        server.pump.start()
        server.url = server.expect(r"serving (http://\S+/mcp)")[1]
        server.token = server.expect(r"token: (\S+)")[1]
        return server

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def expect(self, pattern: str) -> re.Match[str]:
        """The first line printed from now on that matches ``pattern``."""
        while True:
            try:
                line = self.lines.get(timeout=DEADLINE)
            except queue.Empty:
                raise AssertionError(f"the server printed no line matching {pattern!r}") from None
            if match := re.search(pattern, line):
                return match

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE)
        if self.pump is not None:
            self.pump.join(timeout=DEADLINE)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One HTTP server for the module, on a free port, with a generated token."""
    home = tmp_path_factory.mktemp("mcp-http")
    config = home / "tasktrail.toml"
    config.write_text(CONFIG)
    server = Served.start(home / "tasks.db", config)
    yield server
    server.stop()


@asynccontextmanager
async def session(
    url: str, token: str | None, name: str = "http-client"
) -> AsyncIterator[ClientSession]:
    """The SDK's client over streamable HTTP, sending ``token`` as a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, client_info=Implementation(name=name, version="1")) as client,
    ):
        await client.initialize()
        yield client


async def test_with_the_token_a_client_runs_a_task(served: Served) -> None:
    """The SDK client with the printed token lists the tools and runs a task; the task's
    creation names the client as its actor."""
    async with session(served.url, served.token, name="over-http") as client:
        tools = (await client.list_tools()).tools
        ran = payload(
            await client.call_tool("run_task", {"agent": "shell", "prompt": "echo via http"})
        )
        history = payload(await client.call_tool("task_history", {"task_id": ran["task_id"]}))
    assert len(tools) == 8
    assert ran["state"] == "completed"
    assert ran["output"] == "via http\n"
    assert history["events"][0]["actor"] == "mcp:over-http"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, id="wrong-token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="other-scheme"),
    ],
)
async def test_a_request_without_the_token_gets_401_and_changes_nothing(
    served: Served, headers: dict[str, str]
) -> None:
    """No token, a wrong one or another scheme: 401 with a Bearer challenge, no event."""
    before = event_count(served.db)
    async with httpx2.AsyncClient() as http:
        answer = await http.post(
            served.url, json=LAUNCH, headers={**headers, "Accept": "application/json"}
        )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert event_count(served.db) == before


async def test_the_sdk_client_without_the_token_is_refused(served: Served) -> None:
    """The SDK client cannot even initialize without the token."""
    with pytest.raises(BaseExceptionGroup) as raised:
        async with session(served.url, None):
            pass
    assert raised.group_contains(MCPError, depth=None)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Origin": "http://evil.example"}, 403, id="foreign-origin"),
        pytest.param({"Origin": "null"}, 403, id="null-origin"),
        pytest.param({"Host": "evil.example"}, 421, id="foreign-host"),
    ],
)
async def test_a_foreign_origin_or_host_is_refused_even_with_the_token(
    served: Served, headers: dict[str, str], status: int
) -> None:
    """DNS rebinding: a page of another origin, or a request for another host name, is
    refused before the token is even looked at; nothing is written."""
    before = event_count(served.db)
    async with httpx2.AsyncClient() as http:
        answer = await http.post(
            served.url,
            json=LAUNCH,
            headers={"Authorization": f"Bearer {served.token}", **headers},
        )
    assert answer.status_code == status
    assert event_count(served.db) == before


async def test_sigterm_stops_the_server_and_requeues_its_running_task(
    tmp_path: Path, config_path: Path
) -> None:
    """SIGTERM: the server stops with exit code 0 and its running task is re-queued, not
    left running."""
    db = tmp_path / "tasks.db"
    server = Served.start(db, config_path)
    async with session(server.url, server.token) as client:
        task_id = payload(
            await client.call_tool("launch_task", {"agent": "shell", "prompt": "sleep 120"})
        )["task_id"]

        async def running() -> bool:
            status = payload(await client.call_tool("task_status", {"task_id": task_id}))
            return bool(status["state"] == "running")

        await until(running, "the task to run")
    assert server.stop() == 0
    async with open_store(db) as store:
        task = await store.get_task(task_id)
    assert task is not None
    assert task.state is TaskState.PENDING
    assert task.reason is not None and "shut" in task.reason
