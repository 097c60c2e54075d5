"""The documentation: generated blocks are current, code examples run, the site builds.

Code examples: every ```python block in docs/**/*.md and README.md is run, unless it
contains the comment ``# not-run``. Each block runs as ``__main__`` in a fresh temporary
directory, except a block whose first line is ``# continued from the previous step``: it
runs in the directory of the block before it on the same page (the tutorial's steps build
on one database).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tasktrail.lifecycle import mermaid_diagram

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NOT_RUN = "# not-run"
CONTINUED = "# continued from the previous step"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python\b[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    """One python code block of a page."""

    page: Path
    line: int
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _pages() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md"))
    readme = ROOT / "README.md"
    return [*pages, readme] if readme.exists() else pages


def _blocks(page: Path) -> Iterator[Block]:
    text = page.read_text(encoding="utf-8")
    for match in _FENCE.finditer(text):
        indent = match["indent"]
        lines = match["body"].splitlines(keepends=True)
        code = "".join(line.removeprefix(indent) for line in lines)
        line = text.count("\n", 0, match.start()) + 2  # the first line of code
        yield Block(page, line, code)


def _chains() -> list[list[Block]]:
    """Runnable blocks, grouped so that each group shares one directory."""
    chains: list[list[Block]] = []
    for page in _pages():
        current: list[Block] | None = None
        for block in _blocks(page):
            if NOT_RUN in block.code:
                continue
            if block.code.startswith(CONTINUED):
                if current is None:
                    raise AssertionError(f"{block.where}: nothing before it to continue from")
                current.append(block)
            else:
                current = [block]
                chains.append(current)
    return chains


def _load_generator(name: str = "gen_state_diagram") -> ModuleType:
    path = DOCS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_state_diagram_is_current() -> None:
    """The generated blocks of reference/lifecycle.md match the lifecycle table."""
    generator = _load_generator()
    text = generator.LIFECYCLE_PAGE.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- BEGIN GENERATED: state-diagram -->\n```mermaid\n(.*?)```\n"
        r"<!-- END GENERATED: state-diagram -->",
        text,
        re.DOTALL,
    )
    hint = "docs are stale: run python docs/gen_state_diagram.py"
    assert block is not None, f"no state-diagram block in lifecycle.md; {hint}"
    assert block[1] == mermaid_diagram(), hint
    assert generator.render(text) == text, hint


def test_cli_reference_is_current() -> None:
    """The generated blocks of reference/cli.md match the commands and EXIT_CODES."""
    generator = _load_generator("gen_cli_reference")
    text = generator.CLI_PAGE.read_text(encoding="utf-8")
    assert generator.render(text) == text, "stale: run python docs/gen_cli_reference.py"
    for name in generator.main.commands:
        assert f"### {name}\n" in text


def test_configuration_reference_is_current() -> None:
    """The settings table of reference/configuration.md matches TaskManager and the
    config file's [worker] keys."""
    generator = _load_generator("gen_config_reference")
    text = generator.PAGE.read_text(encoding="utf-8")
    assert generator.render(text) == text, "stale: run python docs/gen_config_reference.py"


@pytest.mark.parametrize("chain", [pytest.param(c, id=c[0].where) for c in _chains()])
def test_code_example_runs(
    chain: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runnable python block (with the blocks that continue it) runs without error."""
    monkeypatch.chdir(tmp_path)
    for block in chain:
        code = compile(block.code, block.where, "exec")
        exec(code, {"__name__": "__main__", "__file__": str(tmp_path / "example.py")})


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """mkdocs build --strict succeeds."""
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
