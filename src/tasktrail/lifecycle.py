"""The task lifecycle: states, triggers and the one table of legal transitions.

The table is defined once, as data, with the ``transitions`` package (:data:`TRANSITIONS`).
``transitions`` is the authority: :func:`transition_table` asks a single private
``Machine`` what every (state, cancel-requested, trigger) combination leads to, once, and
keeps the answers in a dict. Every append is checked with :func:`next_state`, a dict
lookup, so the hot path never touches a ``Machine`` and no per-task machine ever exists.

A requested cancel is part of the state that matters: once a cancel is requested the task
can only be acknowledged as ``cancelled`` (or record more output while its runner stops),
so a late ``started``/``completed``/``failed``/``requeued`` can never overtake the cancel.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from transitions import Machine, MachineError

__all__ = [
    "ACTIVE_STATES",
    "LIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "TaskState",
    "TransitionKey",
    "Trigger",
    "destination",
    "is_terminal",
    "mermaid_diagram",
    "next_state",
    "transition_table",
]


class TaskState(enum.StrEnum):
    """Where a task is in its life. The last three are terminal and absorbing."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Trigger(enum.StrEnum):
    """What an event does to a task's state. Each event type names one trigger."""

    CREATE = "create"
    CLAIM = "claim"
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    REQUEUE = "requeue"
    REQUEST_CANCEL = "request_cancel"
    ANNOTATE = "annotate"


TERMINAL_STATES: Final = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})
ACTIVE_STATES: Final = frozenset({TaskState.STARTING, TaskState.RUNNING})
"""The states that hold a concurrency slot."""
LIVE_STATES: Final = frozenset({TaskState.PENDING, *ACTIVE_STATES})
"""The states of an unfinished task."""

# The pseudo state of a task that does not exist yet. Never stored, never shown.
_NEW: Final = "new"
_LIVE: Final = sorted(state.value for state in LIVE_STATES)

# The single definition of the lifecycle (SPEC section 1), in the ``transitions`` format.
# ``unless: cancel_requested`` is what makes a requested cancel impossible to overtake.
TRANSITIONS: Final[list[dict[str, Any]]] = [
    {"trigger": Trigger.CREATE.value, "source": _NEW, "dest": TaskState.PENDING.value},
    {
        "trigger": Trigger.CLAIM.value,
        "source": TaskState.PENDING.value,
        "dest": TaskState.STARTING.value,
        "unless": "cancel_requested",
    },
    {
        "trigger": Trigger.START.value,
        "source": TaskState.STARTING.value,
        "dest": TaskState.RUNNING.value,
        "unless": "cancel_requested",
    },
    {
        "trigger": Trigger.COMPLETE.value,
        "source": TaskState.RUNNING.value,
        "dest": TaskState.COMPLETED.value,
        "unless": "cancel_requested",
    },
    {
        "trigger": Trigger.FAIL.value,
        "source": _LIVE,
        "dest": TaskState.FAILED.value,
        "unless": "cancel_requested",
    },
    {"trigger": Trigger.CANCEL.value, "source": _LIVE, "dest": TaskState.CANCELLED.value},
    {
        "trigger": Trigger.REQUEUE.value,
        "source": [TaskState.STARTING.value, TaskState.RUNNING.value],
        "dest": TaskState.PENDING.value,
        "unless": "cancel_requested",
    },
    # Annotations: legal, and change no state.
    {"trigger": Trigger.REQUEST_CANCEL.value, "source": _LIVE, "dest": None},
    {
        "trigger": Trigger.ANNOTATE.value,
        "source": [TaskState.STARTING.value, TaskState.RUNNING.value],
        "dest": None,
    },
]


class _Probe:
    """The one model the ``Machine`` drives while the table is derived."""

    def __init__(self) -> None:
        self.cancel_requested = False
        self.state = _NEW


TransitionKey: TypeAlias = tuple[TaskState | None, bool, Trigger]
"""(state or None before creation, cancel requested, trigger)."""


@functools.cache
def transition_table() -> Mapping[TransitionKey, TaskState]:
    """Every legal (state, cancel_requested, trigger) and the state it leads to.

    ``state`` is ``None`` for a task that does not exist yet. A key that is absent is an
    illegal transition. Derived from :data:`TRANSITIONS` by asking ``transitions`` itself.
    """
    # transitions logs every transition at INFO; deriving the table is not news.
    quiet = logging.getLogger("transitions")
    level, quiet.level = quiet.level, max(quiet.level, logging.WARNING)
    try:
        return _derive_table()
    finally:
        quiet.setLevel(level)


def _derive_table() -> dict[TransitionKey, TaskState]:
    probe = _Probe()
    machine = Machine(
        model=probe,
        states=[_NEW, *[s.value for s in TaskState]],
        transitions=TRANSITIONS,
        initial=_NEW,
        auto_transitions=False,
        send_event=False,
    )
    table: dict[TransitionKey, TaskState] = {}
    sources: list[TaskState | None] = [None, *TaskState]
    for source in sources:
        for flag in (False, True):
            if source is None and flag:
                continue
            for trigger in Trigger:
                machine.set_state(_NEW if source is None else source.value, model=probe)
                probe.cancel_requested = flag
                try:
                    moved = probe.trigger(trigger.value)  # type: ignore[attr-defined]
                except MachineError:
                    continue
                if moved:
                    table[(source, flag, trigger)] = TaskState(probe.state)
    return table


@functools.cache
def _destinations() -> Mapping[Trigger, TaskState | None]:
    found: dict[Trigger, TaskState | None] = {}
    for transition in TRANSITIONS:
        trigger = Trigger(transition["trigger"])
        dest = transition["dest"]
        state = None if dest is None else TaskState(dest)
        if found.setdefault(trigger, state) != state:  # pragma: no cover - a table edit
            raise AssertionError(f"trigger {trigger} leads to two states")
    return found


def destination(trigger: Trigger) -> TaskState | None:
    """The state a legal event of ``trigger`` leads to (``None``: the state stays), read
    from :data:`TRANSITIONS`: every trigger leads to one state, whatever the source."""
    return _destinations()[trigger]


def next_state(
    state: TaskState | None, cancel_requested: bool, trigger: Trigger
) -> TaskState | None:
    """The state after ``trigger``, or ``None`` when the lifecycle forbids it."""
    return transition_table().get((state, cancel_requested, trigger))


def is_terminal(state: TaskState) -> bool:
    """Whether ``state`` is one of the absorbing end states."""
    return state in TERMINAL_STATES


def mermaid_diagram() -> str:
    """The state diagram as Mermaid text, generated from the transition table.

    Annotations (a state leading to itself) are not drawn; a requested cancel only removes
    edges, so each edge is labelled with its trigger alone.
    """
    edges: dict[tuple[str, str], set[str]] = {}
    for (state, _flag, trigger), dest in transition_table().items():
        if state == dest:
            continue
        source = "[*]" if state is None else state.value
        edges.setdefault((source, dest.value), set()).add(trigger.value)
    lines = ["stateDiagram-v2"]
    for (source, target), triggers in sorted(edges.items()):
        lines.append(f"    {source} --> {target}: {', '.join(sorted(triggers))}")
    lines.extend(f"    {state.value} --> [*]" for state in sorted(TERMINAL_STATES))
    return "\n".join(lines) + "\n"
