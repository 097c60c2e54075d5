"""The dashboard's own queries, on both backends: keyset pages, filters, counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tasktrail import (
    InvalidInputError,
    NewEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskStarted,
    TaskState,
    open_store,
)
from tasktrail.store import EventStore
from tasktrail.ui._queries import Cursor, Reader, TaskFilter, open_reader

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    """A settable clock for the store: every commit is stamped with ``now``."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """The store's clock."""
    return Clock()


@pytest.fixture
async def store(database: str, clock: Clock) -> AsyncIterator[EventStore]:
    """An open store on a new database of each backend, stamping events with ``clock``."""
    async with open_store(database, clock=clock) as opened:
        yield opened


@pytest.fixture
async def reader(store: EventStore, database: str) -> AsyncIterator[Reader]:
    """The dashboard's queries on the same database."""
    opened = await open_reader(database).open()
    yield opened
    await opened.close()


async def create(store: EventStore, task_id: str, **fields: object) -> None:
    created = TaskCreated(**{"agent": "shell", "prompt": f"prompt of {task_id}", **fields})
    await store.append(task_id, [NewEvent(created, actor="user")], expected_version=0)


async def walk(reader: Reader, where: TaskFilter, limit: int) -> list[list[str]]:
    """Every page from the newest, following the older cursor."""
    pages: list[list[str]] = []
    before: Cursor | None = None
    while True:
        page = await reader.page(where, before=before, limit=limit)
        pages.append([task.id for task in page.tasks])
        if page.older is None:
            return pages
        before = page.older


async def test_pages_hold_every_task_once_newest_first(
    store: EventStore, reader: Reader, clock: Clock
) -> None:
    """Keyset pages of 50, older and then newer again, hold every task once, newest first,
    ties of one commit's timestamp broken by creation order."""
    for batch in range(13):  # tasks created in one commit share their timestamp
        clock.now = START + batch
        await asyncio.gather(*(create(store, f"t{batch:02d}-{i}") for i in range(10)))
    expected = [t.id for t in await store.list_tasks(newest_first=True)]
    assert len(expected) == 130
    pages = await walk(reader, TaskFilter(), 50)
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [task_id for page in pages for task_id in page] == expected

    last = await reader.page(TaskFilter(), limit=50)
    second = await reader.page(TaskFilter(), before=last.older, limit=50)
    back = await reader.page(TaskFilter(), after=second.newer, limit=50)
    assert [t.id for t in back.tasks] == pages[0]
    assert back.newer is None  # nothing is newer than the first page
    assert back.older is not None


FILTERS: list[tuple[str, Callable[[], TaskFilter]]] = [
    ("state", lambda: TaskFilter(state=TaskState.FAILED)),
    ("agent", lambda: TaskFilter(agent="claude")),
    ("parent", lambda: TaskFilter(parent_id="root")),
    ("text in prompt, any case", lambda: TaskFilter(text="REPORT 1")),
    ("text in id", lambda: TaskFilter(text="odd-")),
    ("text in description", lambda: TaskFilter(text="nightly")),
    ("text in error", lambda: TaskFilter(text="disk full")),
    ("text with LIKE wildcards", lambda: TaskFilter(text="100%_done")),
    ("text with a quote", lambda: TaskFilter(text='say "hi"')),
    ("text nowhere", lambda: TaskFilter(text="zebra")),
    ("several", lambda: TaskFilter(state=TaskState.PENDING, agent="shell", text="report")),
]


@pytest.mark.parametrize(("name", "make"), [pytest.param(n, m, id=n) for n, m in FILTERS])
async def test_a_filtered_page_holds_what_the_filter_matches(
    store: EventStore, reader: Reader, clock: Clock, name: str, make: Callable[[], TaskFilter]
) -> None:
    """Every filter, paged by 7, returns exactly the tasks its Python rule matches."""
    await create(store, "root", description="nightly build")
    for i in range(40):
        clock.now = START + i
        task_id = f"odd-{i}" if i % 2 else f"even-{i}"
        await create(
            store, task_id,
            agent="claude" if i % 3 == 0 else "shell",
            parent_id="root" if i % 4 == 0 else None,
            prompt=["report 1 of many", 'say "hi"', "100%_done", "nothing"][i % 4],
        )  # fmt: skip
        if i % 5 == 0:
            await store.append(
                task_id, [NewEvent(TaskFailed(error="Disk full on /var"))], expected_version=1
            )
    where = make()
    everything = await store.list_tasks(newest_first=True)
    expected = [t.id for t in everything if where.matches(t)]
    pages = await walk(reader, where, 7)
    assert [task_id for page in pages for task_id in page] == expected
    if name != "text nowhere":
        assert expected


async def test_counts_per_state_and_agent(store: EventStore, reader: Reader) -> None:
    """Counts per state (every state present) and per agent and state."""
    await create(store, "a")
    await create(store, "b", agent="claude")
    await create(store, "c", agent="claude")
    await store.append("c", [NewEvent(TaskCancelled())], expected_version=1)
    assert await reader.state_counts() == {
        "pending": 2, "starting": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 1,
    }  # fmt: skip
    agents = await reader.agent_counts()
    assert sorted(agents) == ["claude", "shell"]
    assert agents["claude"]["cancelled"] == 1
    assert agents["claude"]["pending"] == 1
    assert agents["shell"]["pending"] == 1


async def finish(store: EventStore, clock: Clock, task_id: str, at: float, how: str) -> None:
    clock.now = at
    await create(store, task_id)
    if how == "completed":
        steps = [TaskClaimed(worker_id="w", attempt=1), TaskStarted(), TaskCompleted()]
    elif how == "failed":
        steps = [TaskFailed(error="boom")]
    else:
        steps = [TaskCancelled()]
    await store.append(task_id, [NewEvent(step) for step in steps], expected_version=1)


async def test_finished_per_minute(store: EventStore, reader: Reader, clock: Clock) -> None:
    """Finished tasks are counted in the minute and state they finished in; older ones,
    and live ones, are not."""
    since = START + 3600
    await finish(store, clock, "too-old", since - 1, "completed")
    await finish(store, clock, "first-a", since, "completed")
    await finish(store, clock, "first-b", since + 59.9, "failed")
    await finish(store, clock, "third", since + 150, "cancelled")
    await finish(store, clock, "last", since + 59 * 60 + 30, "completed")
    clock.now = since + 10
    await create(store, "live")
    assert await reader.finished_per_minute(since) == {
        (0, "completed"): 1, (0, "failed"): 1, (2, "cancelled"): 1, (59, "completed"): 1,
    }  # fmt: skip


async def test_locate_names_the_task_and_version_of_an_event(
    store: EventStore, reader: Reader
) -> None:
    """An event's sequence number leads to its task and version; an unknown one to None."""
    await create(store, "first")
    await create(store, "second")
    await store.append("second", [NewEvent(TaskCancelled())], expected_version=1)
    head = await store.head()
    assert await reader.locate(head) == ("second", 2)
    assert await reader.locate(head + 100) is None


@pytest.mark.parametrize("text", ["", "abc", "1.5", "1.5_x", "nan_3", "inf_1", "_4"])
def test_a_malformed_page_position_is_refused(text: str) -> None:
    """A page position that is not ``<time>_<order>`` is an InvalidInputError."""
    with pytest.raises(InvalidInputError, match="not a page position"):
        Cursor.decode(text)


def test_a_cursor_survives_its_url_form() -> None:
    """A cursor encodes to a URL value and decodes to itself, to the last bit."""
    cursor = Cursor(1_767_225_600.123456789, 42)
    assert Cursor.decode(cursor.encode()) == cursor


def test_filters_from_the_query_string() -> None:
    """Blank values mean no filter; an unknown state or an overlong text is refused."""
    assert not TaskFilter.parse(state="", agent=" ", parent_id="", text="  ").active
    assert TaskFilter.parse(state="running").state is TaskState.RUNNING
    with pytest.raises(InvalidInputError, match="unknown state"):
        TaskFilter.parse(state="sleeping")
    with pytest.raises(InvalidInputError, match="longer than"):
        TaskFilter.parse(text="x" * 201)
