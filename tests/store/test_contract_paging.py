"""The store contract, listings at scale: keyset paging, offsets, sorts, the worker and
id-prefix filters, bounded counts. Runs against every backend (``backend_store``)."""

from __future__ import annotations

import itertools

import pytest

from helpers import new
from tasktrail import (
    InvalidInputError,
    InvalidTaskIdError,
    NewEvent,
    TaskClaimed,
    TaskCreated,
    TaskNotFoundError,
    Trigger,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
async def ticking(open_store):
    """A store whose clock advances one second per reading."""
    ticks = itertools.count()
    async with open_store(clock=lambda: T0 + next(ticks)) as store:
        yield store


async def _create(store, task_id: str, *, agent: str = "coder") -> None:
    await store.append(task_id, [NewEvent(TaskCreated(agent=agent, prompt="p"))])


async def _ids(store, **options) -> list[str]:
    return [task.id for task in await store.list_tasks(**options)]


async def test_after_id_pages_through_every_task_once(ticking) -> None:
    """Pages chained by after_id cover every task exactly once, in both orders."""
    names = [f"t{n:02d}" for n in range(23)]
    for name in names:
        await _create(ticking, name)
    for newest_first in (True, False):
        seen: list[str] = []
        after = None
        while page := await _ids(ticking, limit=5, newest_first=newest_first, after_id=after):
            seen += page
            after = page[-1]
        assert seen == (names[::-1] if newest_first else names)


async def test_after_id_breaks_ties_of_one_commit_by_creation_order(backend_store) -> None:
    """Tasks created at the same instant page in creation order, none lost or repeated."""
    frozen = backend_store  # its clock reads the real time: one commit, one timestamp
    appends = [frozen.append(f"same-{n}", [NewEvent(TaskCreated(agent="a"))]) for n in range(7)]
    for append in appends:
        await append
    everything = await _ids(frozen, newest_first=True)
    first = await _ids(frozen, newest_first=True, limit=3)
    rest = await _ids(frozen, newest_first=True, after_id=first[-1])
    assert first + rest == everything
    assert sorted(everything) == sorted(f"same-{n}" for n in range(7))


async def test_after_id_with_filters_and_an_unknown_cursor(ticking) -> None:
    """The cursor combines with filters; a cursor naming no task is TaskNotFoundError."""
    for n in range(6):
        await _create(ticking, f"t{n}", agent="even" if n % 2 == 0 else "odd")
    assert await _ids(ticking, agent="even", after_id="t2") == ["t4"]
    assert await _ids(ticking, agent="even", newest_first=True, after_id="t3") == ["t2", "t0"]
    with pytest.raises(TaskNotFoundError):
        await ticking.list_tasks(after_id="ghost")


async def test_offset_skips_rows(ticking) -> None:
    """offset skips that many rows of the order, with or without a limit."""
    for n in range(5):
        await _create(ticking, f"t{n}")
    assert await _ids(ticking, offset=3) == ["t3", "t4"]
    assert await _ids(ticking, offset=1, limit=2, newest_first=True) == ["t3", "t2"]
    with pytest.raises(InvalidInputError, match="offset"):
        await ticking.list_tasks(offset=-1)


async def test_sort_by_last_change(ticking) -> None:
    """sort='updated' orders by the last change, and pages by it."""
    for name in ("a", "b", "c"):
        await _create(ticking, name)
    await ticking.append("a", [new(Trigger.CLAIM)])  # a changed last
    assert await _ids(ticking, sort="updated", newest_first=True) == ["a", "c", "b"]
    assert await _ids(ticking, sort="updated", newest_first=True, after_id="c") == ["b"]
    with pytest.raises(InvalidInputError, match="sort must be one of"):
        await ticking.list_tasks(sort="priority")


async def test_worker_filter(backend_store) -> None:
    """worker_id keeps the tasks that worker holds or last held."""
    for name in ("a", "b", "c"):
        await _create(backend_store, name)
    await backend_store.append("a", [NewEvent(TaskClaimed(worker_id="w1", attempt=1))])
    await backend_store.append("b", [NewEvent(TaskClaimed(worker_id="w2", attempt=1))])
    assert await _ids(backend_store, worker_id="w1") == ["a"]
    assert await _ids(backend_store, worker_id="w2", state="starting") == ["b"]
    assert await _ids(backend_store, worker_id="nobody") == []


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param("3f", ["3f2a", "3f2b", "3fff"], id="several"),
        pytest.param("3f2a", ["3f2a"], id="exact"),
        pytest.param("41", [], id="none"),
        pytest.param("é", ["éa", "éé"], id="unicode"),
        pytest.param("\U0010ffff", ["\U0010ffffz"], id="last-code-point"),
    ],
)
async def test_id_prefix(backend_store, prefix: str, expected: list[str]) -> None:
    """id_prefix keeps exactly the ids that start with it (no neighbour, any character)."""
    for name in ("3e99", "3f2a", "3f2b", "3fff", "40", "éa", "éé", "f", "\U0010ffffz"):
        await _create(backend_store, name)
    assert sorted(await _ids(backend_store, id_prefix=prefix)) == sorted(expected)


async def test_id_prefix_is_checked_like_an_id(backend_store) -> None:
    """An empty prefix, or one with a control character, is refused."""
    for prefix in ("", "a\nb"):
        with pytest.raises(InvalidTaskIdError):
            await backend_store.list_tasks(id_prefix=prefix)


async def test_only_finished_since(ticking) -> None:
    """only_finished_since keeps the finished tasks whose finish lies at or after that time
    (finished_since, retention, keeps the unfinished ones too)."""
    for name in ("early", "late", "open"):
        await _create(ticking, name)
    await ticking.append("early", [new(Trigger.FAIL)])
    await ticking.append("late", [new(Trigger.FAIL)])
    late = await ticking.get_task("late")
    assert late is not None
    assert await _ids(ticking, only_finished_since=late.updated_at) == ["late"]
    assert await _ids(ticking, only_finished_since=T0) == ["early", "late"]
    assert await _ids(ticking, finished_since=late.updated_at) == ["late", "open"]
    assert await ticking.count_tasks(only_finished_since=late.updated_at) == 1


async def test_count_tasks_is_bounded(ticking) -> None:
    """count_tasks counts the filtered tasks, at most ``limit`` of them."""
    for n in range(12):
        await _create(ticking, f"t{n:02d}", agent="a" if n < 9 else "b")
    assert await ticking.count_tasks() == 12
    assert await ticking.count_tasks(agent="a") == 9
    assert await ticking.count_tasks(agent="a", limit=4) == 4
    assert await ticking.count_tasks(state="completed") == 0
    assert await ticking.count_tasks(since=T0 + 10) == 2


async def test_task_counts_per_agent_and_state(backend_store) -> None:
    """task_counts gives {agent: {state: count}} from the projection."""
    for name, agent in (("a", "x"), ("b", "x"), ("c", "y")):
        await _create(backend_store, name, agent=agent)
    await backend_store.append("b", [new(Trigger.FAIL)])
    assert await backend_store.task_counts() == {
        "x": {"failed": 1, "pending": 1},
        "y": {"pending": 1},
    }


async def test_count_tasks_after_a_position(ticking) -> None:
    """count_tasks(after_id=...) counts what the pages after that task hold."""
    for n in range(8):
        await _create(ticking, f"t{n}")
    assert await ticking.count_tasks(after_id="t2") == 5
    assert await ticking.count_tasks(after_id="t2", newest_first=True) == 2
    assert await ticking.count_tasks(after_id="t2", limit=3) == 3
    with pytest.raises(TaskNotFoundError):
        await ticking.count_tasks(after_id="ghost")
