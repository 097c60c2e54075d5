"""What the page generators (``gen_*.py``) share: blocks between marker comments, and the
command line that rewrites a page or, with ``--check``, says it is stale."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Blocks = Mapping[str, Callable[[], str]]


def render(text: str, blocks: Blocks) -> str:
    """``text`` with every generated block replaced by its current content."""
    for name, build in blocks.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n)(.*?)(<!-- END GENERATED: {name} -->)",
            re.DOTALL,
        )
        if not pattern.search(text):
            raise ValueError(f"no '{name}' block in the page")
        body = build()
        text = pattern.sub(lambda m, body=body: m[1] + body + m[3], text)
    return text


def main(page: Path, blocks: Blocks, description: str, argv: Sequence[str] | None) -> int:
    """Rewrite ``page``, or with ``--check`` report whether it is stale (exit 1)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = page.read_text(encoding="utf-8")
    fresh = render(text, blocks)
    if args.check:
        if fresh != text:
            print(f"{page} is stale: run the generator without --check")
            return 1
        return 0
    if fresh != text:
        page.write_text(fresh, encoding="utf-8")
        print(f"rewrote {page}")
    return 0
