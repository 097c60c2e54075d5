"""Regenerate the generated block of docs/reference/configuration.md from the code.

* ``settings``: every :class:`~tasktrail.TaskManager` keyword with its default (from the
  signature) and meaning (from the docstring's ``Args:``), beside its ``[worker]`` key of
  ``tasktrail.toml`` with that key's default and range (from ``tasktrail.cli._config``).

Usage::

    python docs/gen_config_reference.py          # rewrite the block in place
    python docs/gen_config_reference.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _generated, beside this file
import _generated
import msgspec

from tasktrail import TaskManager
from tasktrail.cli import _config

PAGE = Path(__file__).resolve().parent / "reference" / "configuration.md"


def _args(doc: str) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: {name: one-line text}."""
    section = inspect.cleandoc(doc).partition("Args:\n")[2]
    found: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        if not line.strip():
            break
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            name = match[1]
            found[name] = match[2].strip()
        elif name is not None and line.startswith("        "):
            found[name] += " " + line.strip()
        else:
            break
    return found


def _markdown(text: str) -> str:
    """reStructuredText's inline markup of a docstring as Markdown."""
    text = re.sub(r":\w+:`~?[\w.]*?(\w+)`", r"`\1`", text)  # :class:`~a.B` -> `B`
    return text.replace("``", "`").replace("|", "\\|")


def _code(value: object) -> str:
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _range(name: str) -> str:
    low, inclusive, high, unit = _config._WORKER_RANGES[name]
    above = "≥" if inclusive else ">"
    return f"{above} {low:g}, ≤ {high:,.10g}{unit}"


def settings_block() -> str:
    """The table of TaskManager settings and their tasktrail.toml keys."""
    signature = inspect.signature(TaskManager.__init__)
    meaning = _args(TaskManager.__doc__ or "")
    toml_defaults = msgspec.structs.asdict(_config.WorkerConfig())
    rows = [
        "| `TaskManager` keyword | default | `[worker]` key (default; range) | meaning |",
        "|---|---|---|---|",
    ]
    for name, param in signature.parameters.items():
        if name in ("self", "database"):
            continue
        default = "required" if param.default is inspect.Parameter.empty else _code(param.default)
        if name in toml_defaults:
            toml = f"`{name}` ({_code(toml_defaults[name])}; {_range(name)})"
        elif name == "limits":
            toml = "the `[limits]` table (each ≥ 1, ≤ 10,000)"
        else:
            toml = "-"
        text = _markdown(meaning.get(name, ""))
        rows.append(f"| `{name}` | {default} | {toml} | {text} |")
    missing = set(toml_defaults) - set(signature.parameters)
    if missing:
        raise AssertionError(f"[worker] keys that are no TaskManager keyword: {missing}")
    return "\n".join(rows) + "\n"


BLOCKS = {"settings": settings_block}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    return _generated.render(text, BLOCKS)


def main_(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with ``--check`` report whether it is stale."""
    return _generated.main(PAGE, BLOCKS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main_())
