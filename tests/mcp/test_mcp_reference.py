"""docs/reference/mcp.md: its generated block matches the server's tool definitions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tasktrail.mcp import TOOLS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_mcp_reference", DOCS / "gen_mcp_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mcp_reference_is_current() -> None:
    """Every tool has its section, generated from tools/list's definitions."""
    generator = _generator()
    text = generator.MCP_PAGE.read_text(encoding="utf-8")
    assert generator.render(text) == text, "stale: run python docs/gen_mcp_reference.py"
    for spec in TOOLS:
        assert f"### {spec.name}\n" in text
        assert spec.description in text
