"""Regenerate the lifecycle blocks of docs/reference/lifecycle.md from the code.

Two blocks are generated from :mod:`tasktrail.lifecycle`, between marker comments:

* ``state-diagram``: the Mermaid diagram from ``mermaid_diagram()``;
* ``transition-table``: the transition table, from ``next_state()``.

Usage::

    python docs/gen_state_diagram.py          # rewrite the blocks in place
    python docs/gen_state_diagram.py --check  # exit 1 if a block is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _generated, beside this file
import _generated

from tasktrail.events import EVENT_TYPES
from tasktrail.lifecycle import TERMINAL_STATES, TaskState, Trigger, mermaid_diagram, next_state

LIFECYCLE_PAGE = Path(__file__).resolve().parent / "reference" / "lifecycle.md"


def state_diagram_block() -> str:
    """The body of the ``state-diagram`` block: a mermaid fence."""
    return f"```mermaid\n{mermaid_diagram()}```\n"


def transition_table_block() -> str:
    """The body of the ``transition-table`` block: a markdown table."""
    events: dict[Trigger, list[str]] = {}
    for cls in EVENT_TYPES.values():
        events.setdefault(cls.trigger, []).append(f"`{cls.__name__}`")
    rows = [
        "| From | Event | Trigger | To | Once a cancel is requested |",
        "|---|---|---|---|---|",
    ]
    for source in [None, *TaskState]:
        for trigger in Trigger:
            plain = next_state(source, False, trigger)
            after = next_state(source, True, trigger)
            if plain is None and after is None:
                continue
            dest = plain if plain is not None else after
            to = "no change" if dest == source else f"`{dest}`"
            if source is None:
                cancel = "n/a"
            elif after is None:
                cancel = "refused"
            elif plain is None:
                cancel = "allowed only then"
            else:
                cancel = "allowed"
            origin = "(none)" if source is None else f"`{source}`"
            names = ", ".join(events.get(trigger, []))
            rows.append(f"| {origin} | {names} | `{trigger}` | {to} | {cancel} |")
    refused = ", ".join(f"`{state}`" for state in TaskState if state in TERMINAL_STATES)
    return "\n".join(rows) + f"\n\nIn {refused} every event is refused.\n"


BLOCKS = {
    "state-diagram": state_diagram_block,
    "transition-table": transition_table_block,
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    return _generated.render(text, BLOCKS)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with ``--check`` report whether it is stale."""
    return _generated.main(LIFECYCLE_PAGE, BLOCKS, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
