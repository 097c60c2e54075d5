"""The documentation: generated blocks are current, code examples run, the site builds.

Code examples: every ```python block in docs/**/*.md and README.md is run, unless it
contains the comment ``# not-run``. Each block runs as ``__main__`` in a fresh temporary
directory, except a block whose first line is ``# continued from the previous step``: it
runs in the directory of the block before it on the same page (the tutorial's steps build
on one database).

Two more rules let pages show real applications:

* A block titled with a file name (```python title="jobs.py"```) is also saved under that
  name in its directory, which is on ``sys.path`` while its chain runs: a later block of
  the chain imports it (``from jobs import tasks``), or starts ``tasktrail worker --app
  jobs:tasks`` on it. The modules a chain imported are forgotten after it. A titled block
  marked ``# not-run`` (a program that serves until stopped) is saved but not run, and so
  is a titled block in another language (```toml title="tasktrail.toml"```); such a file
  belongs to the chain before it, as if it continued it.
* A block with ``await`` at its top level runs as a notebook cell runs: compiled with
  ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``, evaluated to a coroutine, and run in an event loop
  (``asyncio.Runner.run``, which is ``asyncio.run`` for one cell), so its code runs
  inside a running loop, as in Jupyter. From such a block on, the blocks of its chain are
  cells of one notebook: they share one namespace and one event loop (a kernel), so a
  client opened in one cell is used in the next; the loop is closed after the chain.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType

import pytest

from tasktrail.lifecycle import mermaid_diagram

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NOT_RUN = "# not-run"
CONTINUED = "# continued from the previous step"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)(?P<info>[^\n]*)\n(?P<body>.*?)"
    r"^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_TITLE = re.compile(r'\btitle="(?P<title>[^"]+)"')


@dataclass(frozen=True)
class Block:
    """One code block of a page: python, or a file in another language that it names."""

    page: Path
    line: int
    code: str
    title: str | None = None
    """The file name the page gives the block (``title="jobs.py"``), if any."""
    language: str = "python"

    @property
    def runs(self) -> bool:
        """Whether the block is run (python, not marked ``# not-run``)."""
        return self.language == "python" and NOT_RUN not in self.code

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


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
        title = _TITLE.search(match["info"])
        if match["language"] == "python" or title is not None:
            name = title["title"] if title else None
            yield Block(page, line, code, name, match["language"])


def _chains(pages: list[Path] | None = None) -> list[list[Block]]:
    """Runnable (or saved) blocks, grouped so that each group shares one directory; only
    groups that run something."""
    chains: list[list[Block]] = []
    for page in _pages() if pages is None else pages:
        current: list[Block] | None = None
        for block in _blocks(page):
            if not block.runs and block.title is None:
                continue
            if block.code.startswith(CONTINUED) or (not block.runs and current is not None):
                if current is None:
                    raise AssertionError(f"{block.where}: nothing before it to continue from")
                current.append(block)
            else:
                current = [block]
                chains.append(current)
    return [chain for chain in chains if any(block.runs for block in chain)]


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


def _compile(block: Block) -> CodeType:
    """The block's code; top-level ``await`` is allowed, as in a notebook cell."""
    return compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


class _Kernel:
    """What the notebook cells of one chain share, as the cells of a notebook share its
    kernel: one namespace and one event loop, which every cell runs inside."""

    def __init__(self, directory: Path) -> None:
        self.runner = asyncio.Runner()
        self.namespace: dict[str, object] = {
            "__name__": "__main__",
            "__file__": str(directory / "notebook.ipynb"),
        }

    def run(self, code: CodeType) -> None:
        """Run one cell: its top-level awaits in the loop; a cell without any still runs
        inside the running loop, as every cell of a notebook does."""
        if code.co_flags & inspect.CO_COROUTINE:
            self.runner.run(eval(code, self.namespace))
        else:

            async def cell() -> None:
                exec(code, self.namespace)

            self.runner.run(cell())


def _save(block: Block, directory: Path) -> None:
    """Save a block titled with a file name there, for the blocks after it to use."""
    if block.title is not None:
        (directory / block.title).write_text(block.code, encoding="utf-8")


def _run_block(block: Block, directory: Path) -> None:
    """Run one block as ``__main__``, as a script (a block with top-level ``await``: as a
    notebook cell, in an event loop of its own)."""
    _save(block, directory)
    code = _compile(block)
    if code.co_flags & inspect.CO_COROUTINE:
        kernel = _Kernel(directory)
        with kernel.runner:
            kernel.run(code)
        return
    name = str(directory / (block.title or "example.py"))
    exec(code, {"__name__": "__main__", "__file__": name})


def _run_chain(chain: list[Block], directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the blocks of a chain in ``directory`` (see the module doc): scripts, and from
    the first block with top-level ``await`` on, notebook cells sharing one kernel.
    Modules the blocks saved there are importable while the chain runs, and forgotten
    after it (another page may reuse a file name)."""
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))
    before = set(sys.modules)
    kernel: _Kernel | None = None
    try:
        for block in chain:
            if not block.runs:
                _save(block, directory)
                continue
            code = _compile(block)
            if kernel is None and not code.co_flags & inspect.CO_COROUTINE:
                _run_block(block, directory)
                continue
            kernel = kernel or _Kernel(directory)
            _save(block, directory)
            kernel.run(code)
    finally:
        if kernel is not None:
            kernel.runner.close()
        for name in set(sys.modules) - before:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(str(directory)):
                del sys.modules[name]


@pytest.mark.parametrize("chain", [pytest.param(c, id=c[0].where) for c in _chains()])
def test_code_example_runs(
    chain: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runnable python block (with the blocks that continue it) runs without error."""
    _run_chain(chain, tmp_path, monkeypatch)


def test_a_top_level_await_block_runs_in_an_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block with top-level ``await`` runs to its end inside a running event loop."""
    code = (
        "import asyncio, pathlib\n"
        "loop = asyncio.get_running_loop()\n"
        "value = await asyncio.sleep(0, result=42)\n"
        "pathlib.Path('cell.txt').write_text(f'{value} {loop.is_running()}')\n"
    )
    _run_chain([Block(tmp_path / "page.md", 1, code)], tmp_path, monkeypatch)
    assert (tmp_path / "cell.txt").read_text() == "42 True"


def test_a_top_level_await_block_fails_like_a_cell() -> None:
    """An exception raised after a top-level ``await`` reaches the test (it is not lost)."""
    code = "import asyncio\nawait asyncio.sleep(0)\nraise LookupError('from the cell')\n"
    with pytest.raises(LookupError, match="from the cell"):
        _run_block(Block(Path("page.md"), 1, code), Path.cwd())


def test_notebook_cells_of_a_chain_share_a_namespace_and_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells after a top-level-await block share its namespace and its event loop."""
    first = Block(
        tmp_path / "page.md",
        1,
        "import asyncio\n"
        "loop = asyncio.get_running_loop()\n"
        "ticket = asyncio.get_running_loop().create_future()\n"
        "await asyncio.sleep(0)\n",
    )
    plain = Block(  # no await: still a cell, inside the running loop
        tmp_path / "page.md",
        6,
        f"{CONTINUED}\nticket.set_result(asyncio.get_running_loop() is loop)\n",
    )
    last = Block(
        tmp_path / "page.md",
        9,
        f"{CONTINUED}\nimport pathlib\npathlib.Path('kernel.txt').write_text(str(await ticket))\n",
    )
    _run_chain([first, plain, last], tmp_path, monkeypatch)
    assert (tmp_path / "kernel.txt").read_text() == "True"


def test_a_block_without_await_runs_outside_an_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block without top-level ``await`` runs as a script: no event loop is running."""
    code = (
        "import asyncio, pathlib\n"
        "try:\n"
        "    asyncio.get_running_loop()\n"
        "    found = 'a loop'\n"
        "except RuntimeError:\n"
        "    found = 'no loop'\n"
        "pathlib.Path('script.txt').write_text(found)\n"
    )
    _run_chain([Block(tmp_path / "page.md", 1, code)], tmp_path, monkeypatch)
    assert (tmp_path / "script.txt").read_text() == "no loop"


def test_a_titled_block_is_importable_by_the_blocks_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block titled ``name.py`` is saved; a later block of its chain imports it."""
    module = Block(tmp_path / "page.md", 1, "ANSWER = 42\n", title="docs_example_mod.py")
    user = Block(
        tmp_path / "page.md",
        5,
        f"{CONTINUED}\nimport docs_example_mod\nassert docs_example_mod.ANSWER == 42\n",
    )
    _run_chain([module, user], tmp_path, monkeypatch)
    assert (tmp_path / "docs_example_mod.py").read_text() == "ANSWER = 42\n"
    assert "docs_example_mod" not in sys.modules  # forgotten after the chain


def test_titled_blocks_that_do_not_run_are_saved_for_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A titled ``# not-run`` block and a titled TOML block are saved, not run."""
    program = Block(
        tmp_path / "page.md", 1, "# not-run: serves for ever\nwhile True: pass\n", "serve.py"
    )
    config = Block(tmp_path / "page.md", 5, f"{CONTINUED}\nx = 1\n", "app.toml", "toml")
    user = Block(
        tmp_path / "page.md",
        9,
        f"{CONTINUED}\nimport pathlib\n"
        "assert 'while True' in pathlib.Path('serve.py').read_text()\n"
        "assert pathlib.Path('app.toml').read_text().endswith('x = 1\\n')\n",
    )
    _run_chain([program, config, user], tmp_path, monkeypatch)
    assert (tmp_path / "serve.py").exists()


def test_a_saved_file_belongs_to_the_chain_before_it(tmp_path: Path) -> None:
    """A titled block that does not run joins the chain before it; untitled ones are left
    out, and a chain that runs nothing is no test."""
    page = tmp_path / "page.md"
    page.write_text(
        '```python title="jobs.py"\nx = 1\n```\n\n'
        '```toml title="app.toml"\ny = 2\n```\n\n'
        '```python title="serve.py"\n# not-run: serves\n```\n\n'
        "```python\n# not-run: a signature\n```\n\n"
        f"```python\n{CONTINUED}\nimport jobs\n```\n\n"
        '```toml title="alone.toml"\nz = 3\n```\n',
        encoding="utf-8",
    )
    (first, *others) = _chains([page])
    assert [b.title or b.code for b in first] == [
        "jobs.py",
        "app.toml",
        "serve.py",
        f"{CONTINUED}\nimport jobs\n",
        "alone.toml",
    ]
    assert others == []


def test_titles_are_read_from_the_fence(tmp_path: Path) -> None:
    """The fence's ``title="..."`` becomes the block's title; other blocks have none."""
    page = tmp_path / "page.md"
    page.write_text(
        '```python title="jobs.py"\nx = 1\n```\n\n```python\ny = 2\n```\n\n'
        '```toml title="a.toml"\nz = 3\n```\n\n```console\n$ ls\n```\n',
        encoding="utf-8",
    )
    assert [(b.title, b.language, b.code) for b in _blocks(page)] == [
        ("jobs.py", "python", "x = 1\n"),
        (None, "python", "y = 2\n"),
        ("a.toml", "toml", "z = 3\n"),
    ]


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
