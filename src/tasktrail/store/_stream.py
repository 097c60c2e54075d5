"""Reading a long run of events in chunks bounded by bytes, on any backend.

A chunk of N rows holds up to N x ``max_event_bytes`` of payload, so a row count alone does
not bound memory: 20,000 rows of 16 KiB output are 320 MB. Each chunk here is found by short
queries. A *probe* first sizes the next window of rows: their count, last key and total
payload bytes, one row back (PostgreSQL's ``octet_length`` reads a value's size from its
header; SQLite counts the bytes in C; nothing of the payload reaches Python). A window that
fits the budget is read whole, and the next window is twice as long. A window that does not
fit is sized again row by row, and the rows that fit (at least one) are read; the other
sizes serve the next chunks, so a row is sized at most twice, never once per chunk. The log
is append-only and readers see a prefix of it, so reading ``after < key <= last`` returns
exactly the rows the probe counted, whatever commits in between.

Each query is short: no statement stays open between chunks, so a slow consumer never
holds a snapshot (or a connection) of the store.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from tasktrail.errors import InvalidInputError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ROW_OVERHEAD",
    "SCAN_CHUNK_BYTES",
    "STREAM_MAX_ROWS",
    "bounded_chunks",
    "check_chunk_bytes",
    "check_versions",
    "prefetched",
]

T = TypeVar("T")

DEFAULT_CHUNK_BYTES: Final = 1 << 20
"""Payload bytes per chunk of ``iter_stream`` (a chunk holds at least one event)."""
SCAN_CHUNK_BYTES: Final = 4 << 20
"""Payload bytes per chunk of a whole-log pass (verify, check_projection, rebuild)."""
STREAM_MAX_ROWS: Final = 5_000
"""The most events per chunk of ``iter_stream``."""
ROW_OVERHEAD: Final = 256
"""Bytes counted per row beside its payload (the envelope): many tiny events add up too."""
_FIRST_WINDOW: Final = 256

Probe = Callable[[int, int, bool], Awaitable[Sequence[Sequence[Any]]]]
"""``probe(after, n, each)``: of the first ``n`` rows with a key above ``after``, each row's
(key, payload bytes) if ``each``, else one row (count, last key, total payload bytes). A
backend writes the two queries out as ``(each, whole)``, for example::

    SELECT seq, octet_length(data) FROM events WHERE seq > $1 ORDER BY seq LIMIT $2
    SELECT count(*), max(k), sum(n) FROM (SELECT seq AS k, octet_length(data) AS n
        FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) AS w
"""
Fetch = Callable[[int, int], Awaitable[list[T]]]
"""``fetch(after, last)``: the rows with ``after < key <= last``, in key order."""


def check_chunk_bytes(chunk_bytes: object) -> int:
    """``chunk_bytes`` if it is an int >= 1, else InvalidInputError."""
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise InvalidInputError(f"chunk_bytes must be an int >= 1, not {chunk_bytes!r}")
    return chunk_bytes


def check_versions(after_version: object, to_version: object, *, top: int) -> tuple[int, int]:
    """(after, last) of a ``after_version < version <= to_version`` range: ints >= 0, the
    last capped at the backend's largest version ``top``; InvalidInputError otherwise."""
    after = _version("after_version", after_version)
    last = top if to_version is None else min(_version("to_version", to_version), top)
    return min(after, top), last


def _version(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be an int >= 0, not {value!r}")
    return value


async def bounded_chunks(
    probe: Probe, fetch: Fetch[T], *, after: int, budget: int, max_rows: int
) -> AsyncIterator[list[T]]:
    """Every row with a key above ``after``, in key order, in non-empty chunks of at most
    ``max_rows`` rows and about ``budget`` bytes (one row may exceed it alone).

    A window of rows is first sized as a whole (one row back); only a window over the
    budget is sized row by row, and those sizes serve the following chunks too.
    """
    sizes: collections.deque[tuple[int, int]] = collections.deque()  # sized, not yet read
    window = min(_FIRST_WINDOW, max_rows)
    while True:
        if not sizes:
            ((count, last, total),) = await probe(after, window, False)
            if not count:
                return
            if int(total or 0) + count * ROW_OVERHEAD <= budget:
                rows = await fetch(after, int(last))
                if not rows:  # cannot happen on an append-only log; never loop on it
                    return
                yield rows
                after = int(last)
                if count == window:
                    window = min(max_rows, window * 2)
                continue
            sizes.extend((int(key), int(n or 0) + ROW_OVERHEAD) for key, n in await probe(
                after, window, True
            ))  # fmt: skip
        total, last, taken = 0, after, 0
        while sizes and (not taken or total + sizes[0][1] <= budget):
            last, counted = sizes.popleft()
            total, taken = total + counted, taken + 1
        rows = await fetch(after, last)
        if not rows:
            return
        yield rows
        after = last
        if not sizes:  # big rows: the next window about one chunk
            window = max(1, min(max_rows, taken))


async def prefetched(chunks: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """``chunks``, reading the next one while the caller works on this one (on the
    database's thread or server, so reading overlaps the caller's decoding)."""

    async def next_one() -> T | None:
        return await anext(chunks, None)

    following = asyncio.ensure_future(next_one())
    try:
        while (item := await following) is not None:
            following = asyncio.ensure_future(next_one())
            yield item
    finally:
        if not following.done():
            following.cancel()
            await asyncio.wait([following])  # the generator must rest before it is closed
        if not following.cancelled():
            following.exception()  # seen: an error of a read nobody wants is not logged
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
