"""Whole-log passes over an SQLite event log: chain verification and folding."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final

from tasktrail.errors import TamperedLogError
from tasktrail.store._progress import advance
from tasktrail.store._scan import APPEND_ONLY_TRIGGERS, check_chain, check_first
from tasktrail.store._sqlite_errors import DriverError
from tasktrail.store._stream import SCAN_CHUNK_BYTES, bounded_chunks, prefetched
from tasktrail.store._verify_range import EVENT_COLUMNS, RangeResult, check_range
from tasktrail.store.base import VerifyReport

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["EVENT_COLUMNS", "fetch_all", "scan", "verify_chain"]

PARALLEL_MIN_EVENTS: Final = 250_000
"""A log at least this long is verified in ranges, one per core (up to 4): below it, starting
a process costs more than the second core saves."""
_SIZES: Final = (  # (row by row, whole window): see tasktrail.store._stream
    "SELECT seq, length(CAST(data AS BLOB)) FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
    "SELECT count(*), max(k), sum(n) FROM (SELECT seq AS k, length(CAST(data AS BLOB)) AS n "
    "FROM events WHERE seq > ? ORDER BY seq LIMIT ?) AS w",
)
_ROWS: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"


async def fetch_all(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Every row of a query, read in one step on the connection's thread (no other query
    can run between its first and last row). When a row fails to decode, the driver's
    traceback is dropped: it holds the half-read cursor, whose open statement would keep
    the connection on its old snapshot for as long as the error lives."""
    try:
        return list(await db.execute_fetchall(sql, params))
    except DriverError as err:
        raise err.with_traceback(None) from None


async def scan(
    db: aiosqlite.Connection, chunk: int = 20_000, *, chunk_bytes: int = SCAN_CHUNK_BYTES
) -> AsyncIterator[list[Any]]:
    """Every event row in sequence order, in chunks of at most ``chunk`` rows and about
    ``chunk_bytes`` of payload (:mod:`._stream`), so memory does not grow with the log or
    with the size of its events.

    The next chunk is read (on the connection's thread) while the caller works on this
    one, so reading and decoding overlap on a second core.
    """

    async def probe(after: int, n: int, each: bool) -> list[Any]:
        return await fetch_all(db, _SIZES[not each], (after, n))

    async def fetch(after: int, last: int) -> list[Any]:
        return await fetch_all(db, _ROWS, (after, last))

    chunks = bounded_chunks(probe, fetch, after=0, budget=chunk_bytes, max_rows=chunk)
    async with contextlib.aclosing(prefetched(chunks)) as ahead:
        async for rows in ahead:
            advance(len(rows))
            yield rows


async def verify_chain(db: aiosqlite.Connection, path: str | None = None) -> VerifyReport:
    """Recompute the hash chain; raise TamperedLogError at the first bad or missing event.

    With the database file's ``path``, a log of ``PARALLEL_MIN_EVENTS`` or more is checked
    in ranges side by side, in this process and in helper processes
    (:mod:`tasktrail.store._verify_range`); the verdict is the same as one pass's.
    """
    ((low, high),) = await fetch_all(db, "SELECT min(seq), coalesce(max(seq), 0) FROM events")
    check_first(low)
    cores = min(os.cpu_count() or 1, 4)
    if path and path != ":memory:" and cores > 1 and high >= PARALLEL_MIN_EVENTS:
        count, head_hash = await _verify_ranges(path, high, cores)
        head = high
    else:
        count, head, head_hash = await check_chain(scan(db))
    triggers = {
        row[0]
        for row in await fetch_all(
            db, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
        )
    }
    return VerifyReport(
        events=count,
        head_sequence=head,
        head_hash=head_hash,
        append_only=triggers >= APPEND_ONLY_TRIGGERS,
    )


async def _verify_ranges(path: str, head: int, parts: int) -> tuple[int, str]:
    """Check ``1..head`` in ``parts`` ranges at once: the first here (in a thread), the
    others in helper processes; a helper that cannot run is replaced by a thread."""
    step = -(-head // parts)
    bounds = [(first, min(first + step - 1, head)) for first in range(1, head + 1, step)]

    async def counted(check: Awaitable[RangeResult]) -> RangeResult:
        result = await check
        advance(result.good)  # a range at a time: the helpers report only at their end
        return result

    results = await asyncio.gather(
        counted(asyncio.to_thread(check_range, path, *bounds[0])),
        *(counted(_check_elsewhere(path, first, last)) for first, last in bounds[1:]),
    )
    count = 0
    for result in results:
        if result.bad is not None:
            raise TamperedLogError(result.bad, result.why or "")
        count += result.good
    return count, results[-1].last_hash


async def _check_elsewhere(path: str, first: int, last: int) -> RangeResult:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tasktrail.store._verify_range", path, str(first), str(last),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            out, _ = await process.communicate()
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode == 0:
            return RangeResult(**json.loads(out))
    except (OSError, ValueError, TypeError):
        pass
    return await asyncio.to_thread(check_range, path, first, last)
