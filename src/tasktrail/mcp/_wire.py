"""Between the bridge and the protocol: results as ``CallToolResult``, errors as one line,
and who the caller is."""

from __future__ import annotations

import json
from typing import Any

from mcp.server import ServerRequestContext
from mcp.types import CallToolResult, TextContent

from tasktrail.mcp._bridge import Outcome, actor_for

__all__ = ["caller", "error_result", "one_line", "outcome_result"]


def one_line(text: str) -> str:
    """``text`` on one line (a model reads tool errors; a traceback never reaches it)."""
    return " ".join(text.split())


def error_result(text: str) -> CallToolResult:
    """A tool error (``isError: true``) with a one-line reason."""
    return CallToolResult(content=[TextContent(type="text", text=one_line(text))], is_error=True)


def outcome_result(outcome: Outcome) -> CallToolResult:
    """A tool's record as JSON text for the model and as structured content for code."""
    text = json.dumps(outcome.record, ensure_ascii=False, default=str)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=outcome.record,
        is_error=outcome.is_error,
    )


def caller(ctx: ServerRequestContext[Any, Any]) -> str:
    """The actor of this request's writes: ``mcp:`` and the client's name.

    The name is the ``clientInfo`` of the client's ``initialize`` request (2025 protocol
    revisions), or of the request's own ``_meta`` envelope (2026-07-28).
    """
    params = ctx.session.client_params
    return actor_for(params.client_info.name if params is not None else None)
