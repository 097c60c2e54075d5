"""Fixtures of the command-line tests: a database, a config, and an in-process runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import CliRun
from tasktrail.cli import main

CONFIG = """
[worker]
poll_interval = 0.05
cancel_grace = 1.0
retry_backoff = 0.05

[agents.echo]
command = ["/bin/echo", "echo says: {prompt}"]
description = "prints its prompt"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A tasktrail.toml with fast polling and an `echo` agent."""
    path = tmp_path / "tasktrail.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def cli(db_path: Path, config: Path) -> CliRun:
    """Invoke the CLI in-process with --db and --config where the command takes them."""

    def invoke(*args: str, input: str | None = None, db: bool = True) -> tuple[int, str, str]:
        command = main.commands[args[0]]
        names = {p.name for p in command.params}
        extra: list[str] = []
        if db and "db" in names:
            extra += ["--db", str(db_path)]
        if "config" in names:
            extra += ["--config", str(config)]
        result = CliRunner().invoke(main, [*args, *extra], input=input)
        return result.exit_code, result.stdout, result.stderr

    return invoke
