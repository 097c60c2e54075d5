"""Regenerate the generated blocks of docs/reference/cli.md from the click commands.

* ``cli-commands``: every command's usage, help text, examples and options;
* ``cli-exit-codes``: the exit code of each error kind, from ``EXIT_CODES``.

Usage::

    python docs/gen_cli_reference.py          # rewrite the blocks in place
    python docs/gen_cli_reference.py --check  # exit 1 if a block is stale
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _generated, beside this file
import _generated
import click

from tasktrail import errors
from tasktrail.cli import EXIT_CODES, main

CLI_PAGE = Path(__file__).resolve().parent / "reference" / "cli.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option_row(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param, click.Argument):
        return (
            f"| `{param.make_metavar(ctx)}` | argument{' (required)' if param.required else ''} |"
        )
    assert isinstance(param, click.Option)
    names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
    if not param.is_flag:
        names += f" `{param.make_metavar(ctx)}`"
    text = param.help or ""
    if param.multiple:
        text += " May be repeated."
    if param.show_default and not (
        param.default is None or param.default is False or param.default == ()
    ):
        text += f" Default: `{param.default}`."
    return f"| {names} | {_cell(text)} |"


def _help_sections(text: str) -> tuple[str, str]:
    """The help text split into its prose and its example lines (after ``Example:``)."""
    prose, _, example = inspect.cleandoc(text).partition("\b\nExample:")
    lines = [line.removeprefix("  ") for line in example.strip("\n").splitlines()]
    return prose.strip(), "\n".join(f"$ {line.strip()}" for line in lines if line.strip())


def commands_block() -> str:
    """Every command, in alphabetical order."""
    parts: list[str] = []
    for name in sorted(main.commands):
        command = main.commands[name]
        ctx = click.Context(command, info_name=f"tasktrail {name}")
        prose, example = _help_sections(command.help or "")
        usage = " ".join(command.collect_usage_pieces(ctx))
        rows = [
            _option_row(param, ctx)
            for param in command.params
            if not (isinstance(param, click.Option) and param.hidden)
        ]
        parts.append(
            f"### {name}\n\n```text\ntasktrail {name} {usage}\n```\n\n{prose}\n\n"
            "| Argument or option | Meaning |\n|---|---|\n"
            + "\n".join(rows)
            + "\n| `-h`, `--help` | Show the help and exit. |\n"
            + f"\n```console\n{example}\n```\n"
        )
    return "\n".join(parts)


def exit_codes_block() -> str:
    """The exit-code table, from ``EXIT_CODES`` (the first matching class wins)."""
    listed = [cls for cls, _ in EXIT_CODES]
    rows = ["| Code | Error kind |", "|---|---|", "| 0 | success |"]
    for cls, code in EXIT_CODES:
        others = sorted(
            name
            for name in errors.__all__
            if (sub := getattr(errors, name)) is not cls
            and issubclass(sub, cls)
            and next(c for c in listed if issubclass(sub, c)) is cls
        )
        also = f" (also {', '.join(f'`{o}`' for o in others)})" if others else ""
        rows.append(f"| {code} | `{cls.__name__}`{also} |")
    rows += [
        "| 2 | also click's usage errors: an unknown option, a missing argument |",
        "| 10 | `verify`: the projection differs from the log, or the append-only triggers "
        "are missing |",
        "| 130 | interrupted (Ctrl-C); `run`: the task was cancelled |",
    ]
    return "\n".join(rows) + "\n"


BLOCKS = {"cli-commands": commands_block, "cli-exit-codes": exit_codes_block}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    return _generated.render(text, BLOCKS)


def main_(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with ``--check`` report whether it is stale."""
    return _generated.main(CLI_PAGE, BLOCKS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main_())
