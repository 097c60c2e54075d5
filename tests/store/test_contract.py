"""The event-store contract: every backend must pass these."""

from __future__ import annotations

import asyncio
import itertools
import json
import warnings
from datetime import UTC, datetime

import pytest

from helpers import new, raw_fetch
from tasktrail import (
    EventIdConflictError,
    IllegalTransitionError,
    InvalidInputError,
    InvalidTaskIdError,
    NewEvent,
    OutputAppended,
    PayloadTooLargeError,
    SQLiteEventStore,
    StoreClosedError,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskNotFoundError,
    TaskStarted,
    TaskState,
    Trigger,
    VersionConflictError,
)
from tasktrail.events import encode_payload


def lifecycle() -> list[NewEvent]:
    """The four events of a successful task."""
    return [new(t) for t in (Trigger.CREATE, Trigger.CLAIM, Trigger.START, Trigger.COMPLETE)]


async def test_append_then_read_back(backend_store) -> None:
    """Appended events come back in order with versions 1..n and the projection follows."""
    result = await backend_store.append("t1", lifecycle(), expected_version=0)
    assert (result.version, result.sequence, result.duplicate) == (4, 4, False)
    assert result.task.state is TaskState.COMPLETED
    events = await backend_store.read_stream("t1")
    assert [e.version for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == [
        "task.created",
        "task.claimed",
        "task.started",
        "task.completed",
    ]
    assert await backend_store.get_task("t1") == result.task


async def test_append_is_atomic(backend_store) -> None:
    """An illegal event anywhere in an append writes none of its events."""
    await backend_store.append("t1", [new(Trigger.CREATE)])
    with pytest.raises(IllegalTransitionError, match="'complete'"):
        await backend_store.append("t1", [new(Trigger.CLAIM), new(Trigger.COMPLETE)])
    assert [e.version for e in await backend_store.read_stream("t1")] == [1]
    task = await backend_store.get_task("t1")
    assert task is not None and task.state is TaskState.PENDING


@pytest.mark.parametrize(
    "append",
    [
        pytest.param(NewEvent(TaskCreated(agent="a\x00b")), id="agent"),
        pytest.param(NewEvent(TaskCreated(agent="a", parent_id="p\x00")), id="parent"),
        pytest.param(NewEvent(TaskCreated(agent="a", concurrency_key="\x00")), id="key"),
        pytest.param(NewEvent(TaskCreated(agent="a"), reason="why\x00"), id="reason"),
        pytest.param(NewEvent(TaskCreated(agent="a"), correlation_id="\x00"), id="correlation"),
    ],
)
async def test_nul_in_stored_text_is_refused_alike_everywhere(
    backend_store, append: NewEvent
) -> None:
    """A NUL character where it would be a column's text is InvalidInputError on every
    backend (PostgreSQL's text cannot hold it), and nothing is written; inside the rest of a
    payload it is stored and read back."""
    with pytest.raises(InvalidInputError, match="NUL"):
        await backend_store.append("t1", [append], expected_version=0)
    assert await backend_store.read_stream("t1") == []
    done = await backend_store.append("t1", [NewEvent(TaskCreated(agent="a", prompt="x\x00y"))])
    assert done.task.prompt == "x\x00y"
    assert (await backend_store.get_task("t1")).prompt == "x\x00y"


async def test_stale_expected_version_conflicts(backend_store) -> None:
    """A stale expected version raises VersionConflictError and writes nothing."""
    await backend_store.append("t1", [new(Trigger.CREATE)], expected_version=0)
    await backend_store.append("t1", [new(Trigger.CLAIM)], expected_version=1)
    with pytest.raises(VersionConflictError) as info:
        await backend_store.append("t1", [new(Trigger.FAIL)], expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await backend_store.head() == 2


async def test_concurrent_claims_one_wins(backend_store) -> None:
    """Of many claims based on the same version, exactly one is written."""
    await backend_store.append("t1", [new(Trigger.CREATE)])
    claims = [
        backend_store.append(
            "t1", [NewEvent(TaskClaimed(worker_id=f"w{i}", attempt=1))], expected_version=1
        )
        for i in range(10)
    ]
    results = await asyncio.gather(*claims, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, VersionConflictError) for r in results if r not in winners)
    assert await backend_store.head() == 2


async def test_retry_is_idempotent(backend_store) -> None:
    """Appending the same NewEvents again writes nothing and reports a duplicate."""
    events = [new(Trigger.CREATE), new(Trigger.CLAIM)]
    first = await backend_store.append("t1", events)
    again = await backend_store.append("t1", events)
    assert again.duplicate
    assert (again.version, again.sequence) == (first.version, first.sequence)
    assert await backend_store.head() == 2
    created = new(Trigger.CREATE)
    same = await asyncio.gather(*(backend_store.append("t3", [created]) for _ in "ab"))
    assert sorted(r.duplicate for r in same) == [False, True]  # written once, answered twice
    assert await backend_store.head() == 3


async def test_retried_annotation_is_written_once(backend_store) -> None:
    """An event legal twice (output on a running task) sent again is stored only once."""
    await backend_store.append("t1", [new(t) for t in (Trigger.CREATE, Trigger.CLAIM)])
    await backend_store.append("t1", [new(Trigger.START)])
    output = new(Trigger.ANNOTATE)
    first = await backend_store.append("t1", [output])
    again = await backend_store.append("t1", [output])  # no expected_version: legal as new
    assert (again.duplicate, again.version, again.sequence) == (True, 4, first.sequence)
    assert [e.version for e in await backend_store.read_stream("t1")] == [1, 2, 3, 4]


async def test_partly_stored_retry_is_refused(backend_store) -> None:
    """Reusing one stored event id beside new events raises EventIdConflictError."""
    created = new(Trigger.CREATE)
    await backend_store.append("t1", [created])
    with pytest.raises(EventIdConflictError):
        await backend_store.append("t1", [created, new(Trigger.CLAIM)])
    with pytest.raises(EventIdConflictError):
        await backend_store.append("t2", [created])
    assert await backend_store.head() == 1


async def test_concurrent_appends_share_commits(open_store) -> None:
    """Many concurrent appends are written by far fewer commits (group commit)."""
    ticks = itertools.count()
    async with open_store(clock=lambda: 1_800_000_000.0 + next(ticks)) as store:
        await asyncio.gather(*(store.append(f"t{i}", lifecycle()) for i in range(200)))
        events = await store.read_all(limit=10_000)
    assert len(events) == 800
    commits = len({e.timestamp for e in events})  # the clock is read once per commit
    assert commits < 50


async def test_answer_comes_after_commit(backend_store) -> None:
    """When append returns, another connection already sees the events."""
    await backend_store.append("t1", lifecycle())
    assert await raw_fetch(backend_store, "SELECT count(*) FROM events") == [(4,)]


async def test_read_all_pages_through_the_log(backend_store) -> None:
    """read_all returns events strictly after a sequence number, in order."""
    for i in range(5):
        await backend_store.append(f"t{i}", lifecycle())
    page = await backend_store.read_all(after=6, limit=5)
    assert [e.sequence for e in page] == [7, 8, 9, 10, 11]
    assert await backend_store.read_all(after=20) == []
    assert await backend_store.head() == 20


async def test_list_tasks_filters(backend_store) -> None:
    """list_tasks filters by state, agent and parent."""
    await backend_store.append("a", lifecycle())
    await backend_store.append("b", [NewEvent(TaskCreated(agent="other", parent_id="a"))])
    assert [t.id for t in await backend_store.list_tasks()] == ["a", "b"]
    assert [t.id for t in await backend_store.list_tasks(state="completed")] == ["a"]
    assert [t.id for t in await backend_store.list_tasks(agent="other")] == ["b"]
    assert [t.id for t in await backend_store.list_tasks(parent_id="a")] == ["b"]
    with pytest.raises(InvalidInputError, match="unknown state"):
        await backend_store.list_tasks(state="sleeping")


async def test_unknown_task(backend_store) -> None:
    """get_task of an unknown id is None; history raises TaskNotFoundError."""
    assert await backend_store.get_task("nope") is None
    with pytest.raises(TaskNotFoundError):
        await backend_store.history("nope")
    with pytest.raises(TaskNotFoundError):
        await backend_store.append("nope", [new(Trigger.CLAIM)])


async def test_state_at_version_and_time(open_store) -> None:
    """state_at shows the task as it was at a version or a moment."""
    now = [1_800_000_000.0]
    async with open_store(clock=lambda: now[0]) as store:
        for trigger in (Trigger.CREATE, Trigger.CLAIM, Trigger.START, Trigger.COMPLETE):
            await store.append("t1", [new(trigger)])
            now[0] += 10
        at_two = await store.state_at("t1", version=2)
        assert at_two is not None and at_two.state is TaskState.STARTING
        moment = datetime.fromtimestamp(1_800_000_025.0, UTC)
        at_time = await store.state_at("t1", at=moment)
        assert at_time is not None and at_time.state is TaskState.RUNNING
        assert await store.state_at("t1", at=1_700_000_000.0) is None
        latest = await store.state_at("t1")
        assert latest == await store.get_task("t1")
        with pytest.raises(InvalidInputError):
            await store.state_at("t1", version=9)


@pytest.mark.parametrize(
    "task_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\ud800", id="lone-surrogate"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("x" * 256, id="too-long"),
        pytest.param(" padded", id="whitespace"),
        pytest.param(42, id="not-a-str"),
    ],
)
async def test_invalid_task_ids_are_refused(backend_store, task_id: object) -> None:
    """A bad task id raises InvalidTaskIdError (a ValueError) and writes nothing."""
    with pytest.raises(InvalidTaskIdError):
        await backend_store.append(task_id, [new(Trigger.CREATE)])
    with pytest.raises(ValueError, match="invalid task id"):
        await backend_store.get_task(task_id)
    assert await backend_store.head() == 0


async def test_unicode_ids_are_fine(backend_store) -> None:
    """Non-ASCII task ids and text round-trip."""
    result = await backend_store.append(
        "tâche-日本-🚀", [NewEvent(TaskCreated(agent="ü", prompt="…"))]
    )
    assert (await backend_store.get_task("tâche-日本-🚀")) == result.task


async def test_oversized_payload_is_refused(open_store) -> None:
    """A payload over max_event_bytes raises PayloadTooLargeError and writes nothing."""
    async with open_store(max_event_bytes=1000) as store:
        with pytest.raises(PayloadTooLargeError) as info:
            await store.append("t1", [NewEvent(TaskCreated(agent="a", prompt="x" * 2000))])
        assert info.value.limit == 1000
        assert await store.head() == 0


async def test_unencodable_text_is_refused(backend_store) -> None:
    """A lone surrogate inside a payload raises InvalidInputError, not UnicodeEncodeError."""
    with pytest.raises(InvalidInputError):
        await backend_store.append("t1", [NewEvent(TaskCreated(agent="a", prompt="bad\udc80"))])
    with pytest.raises(InvalidInputError):
        await backend_store.append("t1", [new(Trigger.CREATE, reason="bad\udc80")])
    assert await backend_store.head() == 0


async def test_rebuild_equals_live(backend_store) -> None:
    """Dropping and replaying the projection gives exactly the live rows."""
    for i in range(20):
        await backend_store.append(f"t{i}", lifecycle()[: 1 + i % 4])
    live = await backend_store.list_tasks()
    assert await backend_store.check_projection() == []
    assert await backend_store.rebuild() == 20
    assert await backend_store.list_tasks() == live
    assert await backend_store.check_projection() == []


async def test_verify_reports_the_head(backend_store) -> None:
    """verify() checks every event and reports the head of the chain."""
    result = await backend_store.append("t1", lifecycle())
    report = await backend_store.verify()
    assert (report.events, report.head_sequence) == (4, 4)
    assert report.head_hash == (await backend_store.read_stream("t1"))[-1].hash
    assert result.sequence == 4


async def test_subscription_resumes_after_restart(open_store) -> None:
    """A subscriber resumes after its last finished batch when reopened."""
    async with open_store() as store:
        for i in range(3):
            await store.append(f"t{i}", lifecycle())
        sub = store.subscribe("mailer", batch_size=5)
        seen = [(await anext(sub)).sequence for _ in range(7)]
        assert seen == [1, 2, 3, 4, 5, 6, 7]
        await sub.commit()
    async with open_store() as store:
        sub = store.subscribe("mailer", batch_size=5)
        rest = [(await anext(sub)).sequence for _ in range(5)]
        assert rest == [8, 9, 10, 11, 12]
        assert await store.load_checkpoint("other") == 0


async def test_subscription_wakes_on_new_events(backend_store) -> None:
    """A subscriber waiting at the head receives an event appended later."""
    sub = backend_store.subscribe("live", poll_interval=3600.0)

    async def first() -> int:
        return (await anext(sub)).sequence

    waiting = asyncio.create_task(first())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await backend_store.append("t1", [new(Trigger.CREATE)])
    assert await asyncio.wait_for(waiting, 60.0) == 1  # a hang guard, far below the poll


async def test_closed_store_refuses_work(open_store) -> None:
    """After close, calls raise StoreClosedError; closing twice is harmless."""
    store = open_store()
    async with store:
        pass
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.append("t1", [new(Trigger.CREATE)])
    with pytest.raises(StoreClosedError):
        await store.get_task("t1")


async def test_close_finishes_queued_appends(open_store) -> None:
    """Appends queued before close are committed and answered."""
    store = await open_store().open()
    pending = [asyncio.create_task(store.append(f"t{i}", lifecycle())) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    results = await asyncio.gather(*pending)
    assert len({r.stream_id for r in results}) == 50
    async with open_store() as again:
        assert await again.head() == 200


async def test_unclosed_store_warns(open_store) -> None:
    """A store dropped while open emits a ResourceWarning."""
    store = await open_store().open()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.__del__()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    await store.close()


async def test_payload_is_readable_json(backend_store) -> None:
    """The stored payload is plain JSON text with its type tag, readable by the database."""
    await backend_store.append(
        "t1",
        [
            NewEvent(TaskCreated(agent="a")),
            NewEvent(TaskClaimed(worker_id="w", attempt=1)),
            NewEvent(TaskStarted()),
            NewEvent(TaskCompleted(result=[1, "two"])),
        ],
    )
    if isinstance(backend_store, SQLiteEventStore):
        sql = (
            "SELECT type, json_extract(data, '$.type'), json_extract(data, '$.result') "
            "FROM events ORDER BY seq"
        )
    else:
        sql = (
            "SELECT type, data::jsonb ->> 'type', (data::jsonb -> 'result')::text "
            "FROM events ORDER BY seq"
        )
    rows = await raw_fetch(backend_store, sql)
    assert rows[-1][:2] == ("task.completed", "task.completed")
    assert json.loads(rows[-1][2]) == [1, "two"]


async def test_state_at_stops_at_the_first_later_event(open_store) -> None:
    """A clock that stepped back never makes state_at skip an event in the middle."""
    times = iter([100.0, 200.0, 150.0, 300.0])  # the third commit's clock went back
    async with open_store(clock=lambda: next(times)) as store:
        for trigger in (Trigger.CREATE, Trigger.CLAIM, Trigger.START, Trigger.COMPLETE):
            await store.append("t1", [new(trigger)])
        at = await store.state_at("t1", at=160.0)
        assert at is not None
        assert at.version == 1  # not {1, 3}: that state never existed
        events = await store.history("t1")
        exact = await store.state_at("t1", at=events[1].recorded_at)
        assert exact is not None
        assert exact.version == 3  # 150.0 <= 200.0 follows it at once


async def test_claims_never_exceed_a_limit(backend_store) -> None:
    """Claims with a limit are checked under the write lock: never more than the limit start."""
    from tasktrail import ConcurrencyLimitError

    for name in ("a", "b", "c"):
        await backend_store.append(name, [NewEvent(TaskCreated(agent="x", concurrency_key="k"))])
    claims = [
        backend_store.append(
            name, [new(Trigger.CLAIM), new(Trigger.START)], expected_version=1, limit=1
        )
        for name in ("a", "b", "c")
    ]
    results = await asyncio.gather(*claims, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, ConcurrencyLimitError) for r in results) == 2
    winner = next(r for r in results if not isinstance(r, BaseException))
    await backend_store.append(winner.stream_id, [new(Trigger.COMPLETE)])
    loser = next(n for n in ("a", "b", "c") if n != winner.stream_id)
    started = await backend_store.append(
        loser, [new(Trigger.CLAIM), new(Trigger.START)], expected_version=1, limit=1
    )
    assert started.task.state is TaskState.RUNNING


async def _chunks(store, task_id: str, **options) -> list[list]:
    return [chunk async for chunk in store.iter_stream(task_id, **options)]


async def test_iter_stream_reads_a_task_in_chunks_bounded_by_bytes(backend_store) -> None:
    """iter_stream yields a task's events in order, in chunks of about chunk_bytes each."""
    await backend_store.append("t1", [new(t) for t in (Trigger.CREATE, Trigger.CLAIM)])
    await backend_store.append("other", lifecycle())  # interleaved in the log, not in t1
    await backend_store.append("t1", [new(Trigger.START)])
    output = [NewEvent(OutputAppended(text=f"{i:04d}" + "x" * 996)) for i in range(60)]
    await backend_store.append("t1", output)
    await backend_store.append("t1", [new(Trigger.COMPLETE)])
    chunks = await _chunks(backend_store, "t1", chunk_bytes=8_000)
    assert [e for chunk in chunks for e in chunk] == await backend_store.read_stream("t1")
    sizes = [sum(len(encode_payload(e.payload)) for e in chunk) for chunk in chunks]
    assert all(chunk for chunk in chunks)
    assert all(size <= 8_000 for size in sizes)
    assert sum(sizes) > 60_000 and len(chunks) >= 8  # many chunks, none over the budget
    one_chunk = await _chunks(backend_store, "t1")  # the default budget: 1 MiB
    assert [len(chunk) for chunk in one_chunk] == [64]


async def test_iter_stream_range_and_unknown_task(backend_store) -> None:
    """after_version and to_version bound the versions; an unknown task yields nothing."""
    await backend_store.append("t1", lifecycle())
    chunks = await _chunks(backend_store, "t1", after_version=1, to_version=3, chunk_bytes=1)
    assert [[e.version for e in chunk] for chunk in chunks] == [[2], [3]]  # one event each
    assert await _chunks(backend_store, "t1", after_version=4) == []
    assert await _chunks(backend_store, "nope") == []


async def test_iter_stream_gives_an_event_over_the_budget_alone(backend_store) -> None:
    """An event larger than chunk_bytes comes in a chunk of its own, whole."""
    big = "y" * 50_000
    await backend_store.append("t1", [new(Trigger.CREATE), new(Trigger.CLAIM)])
    await backend_store.append("t1", [new(Trigger.START), NewEvent(OutputAppended(text=big))])
    await backend_store.append("t1", [NewEvent(OutputAppended(text="small"))])
    chunks = await _chunks(backend_store, "t1", chunk_bytes=10_000)
    assert [[e.version for e in chunk] for chunk in chunks] == [[1, 2, 3], [4], [5]]
    assert chunks[1][0].payload.text == big


async def test_iter_stream_sees_events_appended_while_it_reads(backend_store) -> None:
    """A stream read chunk by chunk ends at the last event committed when it got there."""
    await backend_store.append("t1", [new(Trigger.CREATE), new(Trigger.CLAIM)])
    versions = []
    async for chunk in backend_store.iter_stream("t1", chunk_bytes=1):
        versions += [e.version for e in chunk]
        if versions == [1]:
            await backend_store.append("t1", [new(Trigger.START)])
    assert versions == [1, 2, 3]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"after_version": -1}, id="negative-after"),
        pytest.param({"after_version": "2"}, id="str-after"),
        pytest.param({"to_version": 1.5}, id="float-to"),
        pytest.param({"chunk_bytes": 0}, id="zero-chunk"),
        pytest.param({"chunk_bytes": True}, id="bool-chunk"),
    ],
)
async def test_iter_stream_refuses_bad_arguments(backend_store, options: dict) -> None:
    """Bad arguments raise InvalidInputError when iter_stream is called, before any read."""
    with pytest.raises(InvalidInputError):
        backend_store.iter_stream("t1", **options)
    with pytest.raises(InvalidTaskIdError):
        backend_store.iter_stream("bad\nid")


async def test_whole_log_passes_handle_events_larger_than_their_chunks(backend_store) -> None:
    """verify, check_projection and rebuild read big events in bounded chunks, all of them."""
    for i in range(3):
        await backend_store.append(f"t{i}", [new(Trigger.CREATE), new(Trigger.CLAIM)])
        await backend_store.append(f"t{i}", [new(Trigger.START)])
        for first in range(0, 20, 5):
            outputs = [OutputAppended(text=str(n) * 300_000) for n in range(first, first + 5)]
            await backend_store.append(f"t{i}", [NewEvent(e) for e in outputs])
        await backend_store.append(f"t{i}", [new(Trigger.COMPLETE)])
    report = await backend_store.verify()
    assert (report.events, report.head_sequence) == (72, 72)
    assert await backend_store.check_projection() == []
    assert await backend_store.rebuild() == 3
    assert await backend_store.check_projection() == []


async def test_finished_after_reads_finishes_with_their_tasks(backend_store) -> None:
    """finished_after: each final event with its task, in log order, a window at a time."""
    store = backend_store
    await store.append("parent", [new(Trigger.CREATE)])
    done = [NewEvent(TaskCreated(agent="a", parent_id="parent")), NewEvent(TaskCancelled())]
    await store.append("child", done)
    await store.append("orphan", [NewEvent(TaskCreated(agent="a")), NewEvent(TaskCancelled())])
    found, position = await store.finished_after(0)
    assert [(task.id, task.state) for _, task in found] == [
        ("child", TaskState.CANCELLED), ("orphan", TaskState.CANCELLED),
    ]  # fmt: skip
    assert position == await store.head() == 5
    assert found[0][0] == done[1].event_id
    children, _ = await store.finished_after(0, with_parent=True)
    assert [task.id for _, task in children] == ["child"]
    window, upto = await store.finished_after(0, limit=3)
    assert ([task.id for _, task in window], upto) == (["child"], 3)
    assert await store.finished_after(5) == ([], 5)
