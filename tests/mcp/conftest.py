"""Fixtures of the MCP server tests: a config with fast polling and an `echo` agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp_clients import CONFIG


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A tasktrail.toml with fast polling and an `echo` agent."""
    path = tmp_path / "tasktrail.toml"
    path.write_text(CONFIG)
    return path
