"""The small pieces: actor names, argument errors, the HTTP guard, tool definitions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from tasktrail.cli._config import AgentConfig, Config
from tasktrail.errors import ConfigError
from tasktrail.mcp import TOOLS, actor_for, tool_definitions
from tasktrail.mcp._args import LaunchArgs, describe_error
from tasktrail.mcp._http import Guard
from tasktrail.mcp._serve import PipeLines, launchable_agents


async def refuse_all(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app the guard would hand a request to (these tests never get that far)."""
    raise AssertionError("not reached")


@pytest.mark.parametrize(
    ("name", "actor"),
    [
        pytest.param("claude-code", "mcp:claude-code", id="plain"),
        pytest.param("  opencode ", "mcp:opencode", id="spaces"),
        pytest.param("evil\nname\x00", "mcp:evilname", id="control-characters"),
        pytest.param("", "mcp:unknown", id="empty"),
        pytest.param(None, "mcp:unknown", id="none"),
        pytest.param("x" * 500, "mcp:" + "x" * 64, id="long"),
    ],
)
def test_actor_names_the_client(name: str | None, actor: str) -> None:
    """The actor is mcp:<client name>, printable and short."""
    assert actor_for(name) == actor


def test_argument_errors_are_one_line_per_call() -> None:
    """Every problem of a call, on one line, named by field."""
    with pytest.raises(ValidationError) as raised:
        LaunchArgs.model_validate({"prompt": 3, "priority": 5000, "colour": "red"})
    assert describe_error(raised.value) == (
        "invalid arguments: agent: missing (it is required); prompt: Input should be a valid "
        "string; priority: Input should be less than or equal to 1000; colour: unknown argument"
    )


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        pytest.param("http://localhost:3000", True, id="localhost"),
        pytest.param("http://127.0.0.1", True, id="loopback-v4"),
        pytest.param("https://[::1]:8443", True, id="loopback-v6"),
        pytest.param("https://app.example", True, id="allowed-explicitly"),
        pytest.param("http://app.example", False, id="other-scheme"),
        pytest.param("http://localhost.evil.example", False, id="lookalike"),
        pytest.param("http://127.0.0.1.nip.io", False, id="rebinding-name"),
        pytest.param("null", False, id="null"),
        pytest.param("file://", False, id="file"),
    ],
)
def test_origin_rules(origin: str, allowed: bool) -> None:
    """This machine's pages and explicitly allowed origins pass; nothing else."""
    guard = Guard(refuse_all, token="t" * 32, allowed_origins=["https://app.example/"])
    assert guard.origin_allowed(origin) is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        pytest.param("127.0.0.1:8765", True, id="loopback"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("[::1]:80", True, id="v6"),
        pytest.param("attacker.example:8765", False, id="rebound"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
    ],
)
def test_host_rules(host: str | None, allowed: bool) -> None:
    """On a loopback address only loopback Host names are answered."""
    assert Guard.host_allowed(host) is allowed


@pytest.mark.parametrize(
    ("header", "authorized"),
    [
        pytest.param("Bearer " + "t" * 32, True, id="right"),
        pytest.param("bearer   " + "t" * 32, True, id="case-and-spaces"),
        pytest.param("Bearer " + "t" * 31, False, id="short"),
        pytest.param("Token " + "t" * 32, False, id="scheme"),
        pytest.param(None, False, id="missing"),
    ],
)
def test_bearer_token_rules(header: str | None, authorized: bool) -> None:
    """Only `Bearer <the token>` is authorized."""
    guard = Guard(refuse_all, token="t" * 32)
    assert guard.authorized(header) is authorized


def test_only_configured_agents_and_an_explicit_shell_are_launchable() -> None:
    """The config's agents are launchable; `shell` only when allowed; nothing else."""
    config = Config(agents={"claude": AgentConfig(command="claude -p {prompt}", description="c")})
    assert launchable_agents(config) == {"claude": "c"}
    assert set(launchable_agents(config, ("shell",))) == {"claude", "shell"}
    with pytest.raises(ConfigError):
        launchable_agents(config, ("python",))


def test_every_tool_is_defined_for_a_model() -> None:
    """Each tool has a title, a description, a closed object schema and annotations; the
    agent enum lists the launchable agents with their descriptions."""
    definitions = tool_definitions({"claude": "the coding agent", "shell": ""})
    assert [d.name for d in definitions] == [spec.name for spec in TOOLS]
    for tool in definitions:
        assert tool.title and tool.description
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema["additionalProperties"] is False
        assert all("title" not in p for p in tool.input_schema["properties"].values())
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is not None
    launch = definitions[0].input_schema["properties"]["agent"]
    assert launch["enum"] == ["claude", "shell"]
    assert "claude: the coding agent" in launch["description"]


async def test_standard_input_lines_survive_an_oversized_message() -> None:
    """A line over the limit is dropped (read as an empty, unparsable line); the next
    line arrives whole, and the end of the pipe ends the lines."""
    read_end, write_end = os.pipe()
    opened = await PipeLines.open(read_end, limit=64)
    os.close(read_end)
    assert opened is not None
    lines, transport = opened
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(b"x" * 200 + b"\n" + b'{"jsonrpc": "2.0"}\n')
    try:
        got = [line async for line in lines]
    finally:
        transport.close()
    assert got[0] == "\n"
    assert got[-1] == '{"jsonrpc": "2.0"}\n'
    assert all(len(line) <= 64 for line in got)


async def test_standard_input_that_is_not_a_pipe_is_left_to_the_sdk(tmp_path: Path) -> None:
    """A regular file on standard input is not a pipe: the SDK's own reader is used."""
    path = tmp_path / "requests.jsonl"
    path.write_text("{}\n")
    with path.open("rb") as file:
        assert await PipeLines.open(file.fileno()) is None
