"""Regenerate the generated block of docs/reference/mcp.md from the MCP server's tools.

* ``mcp-tools``: every tool's name, title, annotations, description and arguments, from
  the same definitions ``tools/list`` answers with (``tasktrail.mcp.tool_definitions``).

Usage::

    python docs/gen_mcp_reference.py          # rewrite the block in place
    python docs/gen_mcp_reference.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _generated, beside this file
import _generated
from mcp.types import Tool

from tasktrail.mcp import tool_definitions

MCP_PAGE = Path(__file__).resolve().parent / "reference" / "mcp.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _type(prop: dict[str, Any]) -> str:
    """A property's JSON type and bounds, as a reader says them."""
    if "anyOf" in prop:
        kinds = [p for p in prop["anyOf"] if p.get("type") != "null"]
        text = " or ".join(_type(kind) for kind in kinds)
        return f"{text}, or null" if len(kinds) < len(prop["anyOf"]) else text
    if "enum" in prop:
        return "one of " + ", ".join(f"`{value}`" for value in prop["enum"])
    bounds = []
    if "minLength" in prop or "maxLength" in prop:
        low, high = prop.get("minLength", 0), prop.get("maxLength")
        bounds.append(f"{low} to {high} characters" if high is not None else f">= {low} chars")
    if "minimum" in prop:
        bounds.append(f">= {_number(prop['minimum'])}")
    if "exclusiveMinimum" in prop:
        bounds.append(f"> {_number(prop['exclusiveMinimum'])}")
    if "maximum" in prop:
        bounds.append(f"<= {_number(prop['maximum'])}")
    kind = str(prop.get("type", "any"))
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    value = prop.get("default")
    if value is None:
        return "none"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{_number(value) if isinstance(value, float | int) else value}`"


def _hints(tool: Tool) -> str:
    notes = tool.annotations
    assert notes is not None
    if notes.read_only_hint:
        hints = ["read-only"]
    else:
        hints = [
            "writes",
            "destructive" if notes.destructive_hint else "additive",
            "idempotent" if notes.idempotent_hint else "not idempotent",
        ]
    hints.append("open world" if notes.open_world_hint else "closed world")
    if tool.execution is not None and tool.execution.task_support != "forbidden":
        hints.append(f"task support: {tool.execution.task_support}")
    return ", ".join(hints)


def tools_block() -> str:
    """Every tool, in the order ``tools/list`` gives them."""
    parts = []
    for tool in tool_definitions():
        schema = tool.input_schema
        required = set(schema.get("required", []))
        rows = [
            f"| `{name}` | {_type(prop)} | {_default(prop, name in required)} "
            f"| {_cell(prop.get('description', ''))} |"
            for name, prop in schema["properties"].items()
        ]
        parts.append(
            f"### {tool.name}\n\n**{tool.title}** ({_hints(tool)})\n\n{tool.description}\n\n"
            "| Argument | Type | Default | Meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
        )
    return "\n".join(parts)


BLOCKS = {"mcp-tools": tools_block}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    return _generated.render(text, BLOCKS)


def main_(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with ``--check`` report whether it is stale."""
    return _generated.main(MCP_PAGE, BLOCKS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main_())
