"""The ``tasktrail mcp`` command: usage errors in one line, and tasktrail without the
``[mcp]`` extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mcp_clients import plain_env

from tasktrail.cli import main

WITHOUT_SDK = """
import sys
sys.modules["mcp"] = None  # as if the [mcp] extra were not installed
from tasktrail.cli import main
main(["mcp", "--db", "tasks.db"])
"""

IMPORTS_NOTHING = """
import sys
import tasktrail, tasktrail.cli
from click.testing import CliRunner
CliRunner().invoke(tasktrail.cli.main, ["--help"])
CliRunner().invoke(tasktrail.cli.main, ["mcp", "--help"])
print(sorted(m for m in sys.modules if m.split(".")[0] in {"mcp", "mcp_types", "uvicorn"}))
"""


def test_without_the_sdk_the_command_names_the_extra(tmp_path: Path) -> None:
    """Without the MCP SDK: exit code 1 and one line naming pip install 'tasktrail[mcp]'."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SDK],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=60, env=plain_env(),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'tasktrail[mcp]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "tasks.db").exists()


def test_tasktrail_and_its_help_do_not_import_the_sdk(tmp_path: Path) -> None:
    """import tasktrail, --help and mcp --help load nothing of the MCP SDK."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_NOTHING],
        capture_output=True, text=True, cwd=tmp_path, check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--port", "9000"], "--host, --port and --allow-origin need --http", id="port"
        ),
        pytest.param(
            ["--allow-agent", "python"], "only the built-in 'shell' agent", id="allow-agent"
        ),
        pytest.param(["--config", "missing.toml"], "no such configuration file", id="config"),
        pytest.param(
            ["--no-worker", "--max-running", "2"],
            "--max-running sets the in-process worker",
            id="max-running",
        ),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """A bad combination of options: exit code 2, one line, nothing created."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["mcp", "--db", "tasks.db", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "tasks.db").exists()
