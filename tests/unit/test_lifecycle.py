"""The lifecycle table, checked against SPEC section 1 and through the store."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from helpers import PATH_TO, new
from tasktrail import (
    IllegalTransitionError,
    SQLiteEventStore,
    TaskExistsError,
    TaskNotFoundError,
    TaskState,
    Trigger,
)
from tasktrail.lifecycle import TERMINAL_STATES, is_terminal, mermaid_diagram, next_state

P, S, R = TaskState.PENDING, TaskState.STARTING, TaskState.RUNNING
C, F, X = TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED

# SPEC section 1, written out by hand as an independent oracle:
# (state, cancel requested) -> {trigger: next state}
SPEC_TABLE: dict[tuple[TaskState | None, bool], dict[Trigger, TaskState]] = {
    (None, False): {Trigger.CREATE: P},
    (P, False): {Trigger.CLAIM: S, Trigger.FAIL: F, Trigger.CANCEL: X, Trigger.REQUEST_CANCEL: P},
    (S, False): {
        Trigger.START: R,
        Trigger.FAIL: F,
        Trigger.CANCEL: X,
        Trigger.REQUEUE: P,
        Trigger.REQUEST_CANCEL: S,
        Trigger.ANNOTATE: S,
    },
    (R, False): {
        Trigger.COMPLETE: C,
        Trigger.FAIL: F,
        Trigger.CANCEL: X,
        Trigger.REQUEUE: P,
        Trigger.REQUEST_CANCEL: R,
        Trigger.ANNOTATE: R,
    },
    # Once a cancel is requested, only the acknowledgement (and output while stopping).
    (P, True): {Trigger.CANCEL: X, Trigger.REQUEST_CANCEL: P},
    (S, True): {Trigger.CANCEL: X, Trigger.REQUEST_CANCEL: S, Trigger.ANNOTATE: S},
    (R, True): {Trigger.CANCEL: X, Trigger.REQUEST_CANCEL: R, Trigger.ANNOTATE: R},
    (C, False): {},
    (F, False): {},
    (X, False): {},
}

CASES = [
    pytest.param(state, flag, trigger, id=f"{state or 'new'}{'+cancel' if flag else ''}-{trigger}")
    for (state, flag), trigger in itertools.product(SPEC_TABLE, Trigger)
]


@pytest.mark.parametrize(("state", "flag", "trigger"), CASES)
def test_table_matches_spec(state: TaskState | None, flag: bool, trigger: Trigger) -> None:
    """The table derived from `transitions` says exactly what SPEC section 1 says."""
    assert next_state(state, flag, trigger) == SPEC_TABLE[(state, flag)].get(trigger)


@pytest.mark.parametrize(("state", "flag", "trigger"), CASES)
async def test_store_enforces_every_state_and_trigger(
    db_path: Path, state: TaskState | None, flag: bool, trigger: Trigger
) -> None:
    """A legal trigger is appended and moves the state; an illegal one raises, writes nothing."""
    async with SQLiteEventStore(db_path) as store:
        if state is not None:
            events = [new(t) for t in PATH_TO[state]]
            if flag:
                events.append(new(Trigger.REQUEST_CANCEL))
            await store.append("t", events, expected_version=0)
        before = await store.head()
        expected = SPEC_TABLE[(state, flag)].get(trigger)
        if expected is None:
            error = (
                TaskExistsError
                if trigger is Trigger.CREATE and state is not None
                else TaskNotFoundError
                if state is None
                else IllegalTransitionError
            )
            with pytest.raises(error):
                await store.append("t", [new(trigger)])
            assert await store.head() == before
        else:
            result = await store.append("t", [new(trigger)])
            assert result.task.state is expected
            assert await store.head() == before + 1


def test_terminal_states_are_absorbing() -> None:
    """No trigger leads out of a terminal state."""
    for state, trigger in itertools.product(TERMINAL_STATES, Trigger):
        assert next_state(state, False, trigger) is None
    assert all(is_terminal(s) for s in (C, F, X))
    assert not any(is_terminal(s) for s in (P, S, R))


def test_diagram_draws_every_state_change() -> None:
    """The Mermaid diagram has one edge per (source, destination) of the table."""
    diagram = mermaid_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    assert "    [*] --> pending: create\n" in diagram
    assert "    running --> completed: complete\n" in diagram
    assert "    starting --> pending: requeue\n" in diagram
    assert "request_cancel" not in diagram  # annotations are not drawn
