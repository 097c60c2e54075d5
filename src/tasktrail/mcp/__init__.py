"""``tasktrail mcp``: durable background tasks as tools of the Model Context Protocol.

An MCP server (stdio, or streamable HTTP behind a bearer token) whose tools launch tasks
of the agents in ``tasktrail.toml``, read their status and output, wait for them, cancel
them, list them and show their audit trail. Every write is an event in the log with the
actor ``mcp:<client name>``; tasks outlive the client and the server.

Built on the official ``mcp`` SDK (the ``[mcp]`` extra). ``import tasktrail`` never
imports this package; the ``tasktrail mcp`` command imports it when it runs.

Layout::

    _tools.py    the tools: argument models, descriptions, annotations (one table)
    _bridge.py   what each tool does, over a TaskManager
    _tasks.py    the MCP Tasks extension (SEP-2663), answered from the log
    _server.py   the low-level MCP server: tools/list, tools/call, the extension
    _http.py     streamable HTTP: bearer token, Origin check, uvicorn
    _serve.py    one server run: config, worker, transport, signals
"""

from tasktrail.mcp._bridge import Bridge, actor_for
from tasktrail.mcp._serve import ServeOptions, serve, served
from tasktrail.mcp._server import build_server
from tasktrail.mcp._tasks import TASKS_EXTENSION, DurableTasks
from tasktrail.mcp._tools import TOOLS, ToolSpec, tool_definitions

__all__ = [
    "TASKS_EXTENSION",
    "TOOLS",
    "Bridge",
    "DurableTasks",
    "ServeOptions",
    "ToolSpec",
    "actor_for",
    "build_server",
    "serve",
    "served",
    "tool_definitions",
]
