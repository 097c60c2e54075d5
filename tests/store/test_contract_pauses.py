"""The store contract, pauses: a paused agent or concurrency key is left out of every claim
made after the pause returned; every pause and resume is in the append-only control log.
Runs against every backend (``backend_store``)."""

from __future__ import annotations

import time

import pytest

from helpers import raw_fetch
from tasktrail import InvalidInputError, NewEvent, TaskCreated
from tasktrail.store._claim import ClaimRequest


async def _queue(store, *specs: tuple[str, str, str | None]) -> None:
    for task_id, agent, key in specs:
        await store.append(task_id, [NewEvent(TaskCreated(agent=agent, concurrency_key=key))])


async def _claim(store, worker: str = "w1", slots: int = 10) -> list[str]:
    result = await store.claim(ClaimRequest(worker_id=worker, slots=slots, now=time.time()))
    return sorted(task.id for task in result.tasks)


async def test_a_paused_agent_is_not_claimed_until_resumed(backend_store) -> None:
    """Claims skip a paused agent's tasks (the rest of the queue starts); resume frees them."""
    await _queue(backend_store, ("a1", "alpha", None), ("b1", "beta", None), ("a2", "alpha", None))
    paused = await backend_store.pause("agent", "alpha", actor="user:ann", reason="deploy")
    assert (paused.action, paused.kind, paused.target) == ("pause", "agent", "alpha")
    assert (paused.actor, paused.reason) == ("user:ann", "deploy")
    assert await _claim(backend_store) == ["b1"]
    assert await _claim(backend_store) == []
    resumed = await backend_store.resume("agent", "alpha", actor="user:bob")
    assert resumed is not None and resumed.action == "resume"
    assert await _claim(backend_store) == ["a1", "a2"]


async def test_a_paused_key_covers_every_agent_under_it(backend_store) -> None:
    """A paused concurrency key holds back the tasks of every agent that uses it, and an
    agent's own key (its name) when it has none."""
    await _queue(
        backend_store, ("g1", "train", "gpu"), ("g2", "infer", "gpu"), ("c1", "train", None)
    )
    await backend_store.pause("key", "gpu", actor="ops")
    assert await _claim(backend_store) == ["c1"]
    await backend_store.resume("key", "gpu", actor="ops")
    await backend_store.pause("key", "infer", actor="ops")  # infer's tasks use key gpu
    assert await _claim(backend_store) == ["g1", "g2"]


async def test_pause_and_resume_are_idempotent(backend_store) -> None:
    """Pausing twice records one pause; resuming what is not paused records nothing."""
    first = await backend_store.pause("agent", "x", actor="a", reason="one")
    again = await backend_store.pause("agent", "x", actor="b", reason="two")
    assert again == first
    assert await backend_store.resume("agent", "y", actor="a") is None
    assert [c.action for c in await backend_store.controls()] == ["pause"]
    assert await backend_store.list_pauses() == [first]


async def test_the_control_log_keeps_every_step(backend_store) -> None:
    """controls() lists every pause and resume in order, with who and why."""
    await backend_store.pause("agent", "x", actor="ann", reason="r1")
    await backend_store.pause("key", "k", actor="ann")
    await backend_store.resume("agent", "x", actor="bob", reason="r2")
    log = await backend_store.controls()
    assert [(c.action, c.kind, c.target, c.actor, c.reason) for c in log] == [
        ("pause", "agent", "x", "ann", "r1"),
        ("pause", "key", "k", "ann", None),
        ("resume", "agent", "x", "bob", "r2"),
    ]
    assert [c.sequence for c in log] == sorted(c.sequence for c in log)
    assert [c.sequence for c in await backend_store.controls(after=log[0].sequence)] == [
        log[1].sequence,
        log[2].sequence,
    ]
    assert [(p.kind, p.target) for p in await backend_store.list_pauses()] == [("key", "k")]


async def test_the_control_log_is_append_only(backend_store) -> None:
    """UPDATE and DELETE on the control log are refused by the database itself."""
    await backend_store.pause("agent", "x", actor="ann")
    for statement in ("UPDATE controls SET actor = 'mallory'", "DELETE FROM controls"):
        with pytest.raises(Exception, match="append-only"):
            await raw_fetch(backend_store, statement)
    assert [c.actor for c in await backend_store.controls()] == ["ann"]


async def test_pauses_outlive_the_store(open_store) -> None:
    """A pause is durable: a store opened later still leaves the target out."""
    async with open_store() as store:
        await _queue(store, ("a1", "alpha", None))
        await store.pause("agent", "alpha", actor="ann")
    async with open_store() as store:
        assert [p.target for p in await store.list_pauses()] == ["alpha"]
        assert await _claim(store) == []


@pytest.mark.parametrize(
    ("kind", "target", "actor"),
    [
        pytest.param("queue", "x", "a", id="kind"),
        pytest.param("agent", "", "a", id="empty"),
        pytest.param("agent", " x", "a", id="spaces"),
        pytest.param("agent", "a\nb", "a", id="newline"),
        pytest.param("agent", "x" * 256, "a", id="long"),
        pytest.param("agent", "x", "", id="actor"),
    ],
)
async def test_bad_pauses_are_refused(backend_store, kind: str, target: str, actor: str) -> None:
    """An unknown kind, an unusable target or an empty actor is InvalidInputError."""
    with pytest.raises(InvalidInputError):
        await backend_store.pause(kind, target, actor=actor)
    assert await backend_store.controls() == []
