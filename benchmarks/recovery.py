"""Recovery (scenario 5), verification of a large log (6) and resident memory (7).

A log of about H events holds ``live`` tasks that a dead worker left ``running`` (built
once by ``history.py`` and cached). For each history size a fresh process
(``probe.py``) opens ``TaskManager`` on it, which recovers every live task, and reports
how long that took and its resident size. Both sides write into the cached log itself;
``history.scratch`` throws the writes away afterwards.

Baseline, *raw recovery*: stdlib ``sqlite3`` on the same file, timed from opening it: read
the workers, the ``running`` rows and the log's tail, make the same decision for each task
(``tasktrail.runtime._recovery.decide``), build its row with :class:`rows.Chain` (encode,
chain, fold) and write 100 events and their upserts per transaction. Its result passes
``store.verify()`` and ``check_projection()`` (checked on the first repetition).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import history
from common import (
    HERE,
    RAW_BATCH,
    Comparison,
    Figure,
    Outcome,
    Row,
    Say,
    Settings,
    in_order,
    rates,
    remove_db,
    short,
)
from core import raw_verify, tasktrail_verify
from rows import INSERT_EVENT, UPSERT_TASK, Chain, raw_connect
from tasktrail import SQLiteEventStore
from tasktrail.runtime._recovery import Identity, decide, owner_is_dead
from tasktrail.store._plan import EventRow, TaskRow, decode_task, task_row
from tasktrail.store._workers import WORKER_COLUMNS, worker_info

LEASE_TIMEOUT: Final = 30.0


def check_recovered(path: Path, live: int) -> None:
    """Every one of ``live`` tasks pending again, none left starting or running."""
    db = sqlite3.connect(path)
    try:
        counts = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    finally:
        db.close()
    if counts.get("pending", 0) != live or counts.get("running") or counts.get("starting"):
        raise RuntimeError(f"expected {live} pending tasks after recovery, got {counts}")


def raw_recovery(path: Path, live: int, check: bool) -> float:
    """Seconds to record, with stdlib sqlite3, the decision for every running task of a
    dead worker in ``path`` (``check``: verify the result with the store)."""
    here = Identity.here()
    gc.collect()
    start = time.perf_counter()
    db = raw_connect(path)
    try:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        workers = {
            row[0]: worker_info(row)
            for row in db.execute(f"SELECT {WORKER_COLUMNS} FROM workers").fetchall()
        }
        why = {
            worker_id: owner_is_dead(worker, silent_for=0.0, lease_timeout=LEASE_TIMEOUT, here=here)
            for worker_id, worker in workers.items()
        }
        records = db.execute(
            "SELECT record FROM tasks WHERE state IN ('starting', 'running') "
            "ORDER BY created_at, id"
        ).fetchall()
        sequence, previous = db.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        chain = Chain(sequence=sequence, previous=previous)
        events: list[EventRow] = []
        rows: list[TaskRow] = []
        for (record,) in records:
            task = decode_task(record)
            reason = why.get(task.worker_id or "")
            if reason is None:
                continue
            new = decide(task, reason)
            chain.tasks[task.id] = task
            row, after = chain.add(
                task.id, new.payload, actor=new.actor, timestamp=now, event_id=new.event_id,
                reason=new.reason, correlation_id=new.correlation_id,
            )  # fmt: skip
            events.append(row)
            rows.append(task_row(after, row[0]))
            if len(events) == RAW_BATCH:
                db.executemany(INSERT_EVENT, events)
                db.executemany(UPSERT_TASK, rows)
                db.execute("COMMIT")
                db.execute("BEGIN IMMEDIATE")
                events, rows = [], []
        db.executemany(INSERT_EVENT, events)
        db.executemany(UPSERT_TASK, rows)
        db.execute("COMMIT")
    finally:
        db.close()
    elapsed = time.perf_counter() - start
    check_recovered(path, live)
    if check:
        asyncio.run(_check_store(path))
    return elapsed


async def _check_store(path: Path) -> None:
    async with SQLiteEventStore(path) as store:
        await store.verify()
        if wrong := await store.check_projection():
            raise RuntimeError(f"the raw recovery wrote wrong task rows: {wrong[:3]}")


def _probe(path: Path, concurrency: int) -> dict[str, float]:
    command = [sys.executable, str(HERE / "probe.py"), str(path), "--concurrency", str(concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def part_recovery(s: Settings, say: Say) -> Outcome:
    """Recovery of ``live`` tasks at every history size (5), verify of the middle log (6)
    and resident size (7), from one fresh-process probe per measurement."""
    out = Outcome()
    templates: dict[int, tuple[Path, int]] = {}
    for size in s.histories:
        path, events, built = history.cached(s.cache, history=size, live=s.live)
        templates[size] = (path, events)
        megabytes = path.stat().st_size / 1e6
        say(
            f"log of {events:,} events ({megabytes:,.0f} MB), {s.live:,} live: "
            + (f"built in {built:.1f} s" if built else "from the cache")
        )
        out.data[f"history_{size}"] = {"events": events, "mb": megabytes, "build_s": built}
    seconds: dict[str, list[float]] = {}
    memory: dict[str, list[dict[str, float]]] = {}
    middle = sorted(templates)[len(templates) // 2]
    middle_path, middle_events = templates[middle]
    for repetition in range(s.repeat):
        for key, verify in in_order(
            repetition, (("verify", tasktrail_verify), ("raw_verify", raw_verify))
        ):
            elapsed, count = verify(middle_path)
            if count != middle_events:
                raise RuntimeError(f"{key} checked {count} of {middle_events} events")
            seconds.setdefault(key, []).append(elapsed)
            say(
                f"{repetition + 1}/{s.repeat} {key} of {short(count)} events: "
                f"{count / elapsed:,.0f} events/s"
            )
    with tempfile.TemporaryDirectory(prefix="tasktrail-recovery-", dir=s.directory) as tmp:
        for repetition in range(s.repeat):
            empty = Path(tmp, "empty.db")
            remove_db(empty)
            memory.setdefault("empty", []).append(_probe(empty, s.max_running))
            remove_db(empty)
            for size, (template, events) in templates.items():
                check = repetition == 0 and size == min(templates)
                tag = f"{repetition + 1}/{s.repeat}"
                for side in in_order(repetition, ("tasktrail", "raw")):
                    with history.scratch(template, events=events, live=s.live) as path:
                        if side == "raw":
                            elapsed = raw_recovery(path, s.live, check)
                            seconds.setdefault(f"raw_recovery_{size}", []).append(elapsed)
                            say(f"{tag} raw recovery at {short(size)} events: {elapsed:.3f} s")
                            continue
                        result = _probe(path, s.max_running)
                        if result["live"] != s.live:
                            raise RuntimeError(f"{result['live']} live tasks after recovery")
                        check_recovered(path, s.live)
                    seconds.setdefault(f"recovery_{size}", []).append(result["recover_s"])
                    memory.setdefault(str(size), []).append(result)
                    say(
                        f"{tag} recovery at {short(size)} events: "
                        f"{result['recover_s']:.3f} s, resident {result['rss_mb']:.0f} MB "
                        f"(peak {result['peak_mb']:.0f} MB)"
                    )
    out.data["seconds"] = seconds
    out.data["memory"] = memory
    _rows(s, out, templates, seconds, memory, middle_events)
    return out


def _rows(
    s: Settings,
    out: Outcome,
    templates: dict[int, tuple[Path, int]],
    seconds: dict[str, list[float]],
    memory: dict[str, list[dict[str, Any]]],
    middle_events: int,
) -> None:
    c = Comparison(
        "verify_large",
        f"Verify, {short(middle_events)} events, events/s",
        Figure("store.verify()", "events/s", rates(middle_events, seconds["verify"])),
        Figure(
            "raw sqlite3 + hashlib sha256", "events/s", rates(middle_events, seconds["raw_verify"])
        ),
    )
    out.rows.append(Row(6, c, ">= 500,000 events/s", c.tasktrail.median >= 500_000))
    sizes = sorted(templates)
    for size in sizes:
        c = Comparison(
            f"recovery_{size}",
            f"Recovery, {s.live:,} live tasks, {short(templates[size][1])} events in the log, s",
            Figure("TaskManager open (fresh process)", "s", tuple(seconds[f"recovery_{size}"])),
            Figure("raw recovery", "s", tuple(seconds[f"raw_recovery_{size}"])),
        )
        out.rows.append(Row(5, c, "< 1 s", c.tasktrail.median < 1.0))
    small, large = sizes[0], sizes[-1]

    def growth(key: str) -> tuple[float, ...]:
        pairs = zip(seconds[f"{key}_{small}"], seconds[f"{key}_{large}"], strict=True)
        return tuple(b / a for a, b in pairs)

    c = Comparison(
        "recovery_growth",
        f"Recovery time at {short(large)} over {short(small)} events (flat = 1)",
        Figure("TaskManager", "x", growth("recovery")),
        Figure("raw recovery", "x", growth("raw_recovery")),
    )
    out.rows.append(Row(5, c, "flat: within 1.25 x the raw growth", c.ratio <= 1.25))
    base = Figure("empty database", "MB", tuple(m["rss_mb"] for m in memory["empty"]))
    for size in sizes:
        finished = max(0, size - 3 * s.live) // 4
        c = Comparison(
            f"memory_{size}",
            f"Resident size, {s.live:,} live + {short(finished)} finished tasks, MB",
            Figure("TaskManager process", "MB", tuple(m["rss_mb"] for m in memory[str(size)])),
            base,
        )
        out.rows.append(Row(7, c))

    def grown(field: str) -> tuple[float, ...]:
        pairs = zip(memory[str(small)], memory[str(large)], strict=True)
        return tuple(b[field] / a[field] for a, b in pairs)

    finished_small = max(0, small - 3 * s.live) // 4
    finished_large = max(0, large - 3 * s.live) // 4
    c = Comparison(
        "memory_growth",
        f"Resident size with {short(finished_large)} over {short(finished_small)} finished "
        "tasks (independent = 1)",
        Figure("resident now", "x", grown("rss_mb")),
        Figure("peak (VmHWM)", "x", grown("peak_mb")),
    )
    met = max(c.tasktrail.median, c.baseline.median) <= 1.10
    out.rows.append(Row(7, c, "independent: <= 1.10", met))
