"""The store contract, claims: the start queue is walked in start order across every agent
the worker serves, page after page, however many tasks it holds that cannot start. Runs
against every backend (``backend_store``)."""

from __future__ import annotations

import time

from tasktrail import NewEvent, TaskCreated
from tasktrail.store._claim import ClaimRequest


async def _create(store, task_id: str, agent: str, *, key: str | None = None, priority: int = 0):
    created = TaskCreated(agent=agent, concurrency_key=key, priority=priority)
    await store.append(task_id, [NewEvent(created)])


async def _claim(store, *, slots: int, **options) -> list[str]:
    request = ClaimRequest(worker_id="w1", slots=slots, now=time.time(), **options)
    return [task.id for task in (await store.claim(request)).tasks]


async def test_a_claim_walks_past_pages_of_tasks_it_cannot_start(backend_store) -> None:
    """Forty tasks of a key limited to one come first in the queue; a claim of three
    slots takes one of them, then walks on, page after page, to the two tasks behind."""
    for n in range(40):
        await _create(backend_store, f"held-{n:02}", "a", key="gpu", priority=5)
    await _create(backend_store, "free-1", "a")
    await _create(backend_store, "free-2", "b")
    claimed = await _claim(backend_store, slots=3, agents=frozenset({"a", "b"}), limits={"gpu": 1})
    assert claimed == ["held-00", "free-1", "free-2"]


async def test_several_agents_are_claimed_in_one_start_order(backend_store) -> None:
    """The queues of the agents a worker serves merge in start order: priority first, then
    creation; agents it does not serve are left alone."""
    await _create(backend_store, "a-low", "a")
    await _create(backend_store, "b-high", "b", priority=9)
    await _create(backend_store, "c-top", "c", priority=99)
    await _create(backend_store, "b-low", "b")
    await _create(backend_store, "a-mid", "a", priority=3)
    claimed = await _claim(backend_store, slots=10, agents=frozenset({"a", "b"}))
    assert claimed == ["b-high", "a-mid", "a-low", "b-low"]
    assert await _claim(backend_store, slots=10) == ["c-top"]  # every agent
