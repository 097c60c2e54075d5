"""Reads of single tasks asked for at the same moment share one query."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tasktrail import StorageError, Task, TaskState
from tasktrail.runtime._waiting import ReadBatcher


def task(task_id: str) -> Task:
    now = datetime.now(UTC)
    return Task(
        id=task_id, state=TaskState.PENDING, agent="a", prompt="", version=1,
        created_at=now, updated_at=now,
    )  # fmt: skip


async def test_reads_of_one_moment_share_one_query() -> None:
    """Three reads (two of one id) make one read_many call; a missing id reads None."""
    calls: list[list[str]] = []

    async def read_many(ids: list[str]) -> list[Task]:
        calls.append(ids)
        return [task(i) for i in ids if i != "missing"]

    reads = ReadBatcher(read_many)
    async with asyncio.TaskGroup() as group:
        futures = [reads.read(i, group.create_task) for i in ("a", "missing", "a")]
        found = await asyncio.gather(*futures)
    assert calls == [["a", "missing"]]
    assert [t.id if t else None for t in found] == ["a", None, "a"]


async def test_a_failed_query_fails_every_reader() -> None:
    """The error of the shared query reaches each reader; the batch task ends quietly."""

    async def read_many(ids: list[str]) -> list[Task]:
        raise StorageError("disk gone")

    reads = ReadBatcher(read_many)
    async with asyncio.TaskGroup() as group:
        futures = [reads.read(i, group.create_task) for i in ("a", "b")]
        for future in futures:
            with pytest.raises(StorageError):
                await future
