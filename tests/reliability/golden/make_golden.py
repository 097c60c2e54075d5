"""Write the golden database of the current schema, and the projection it must replay to.

Run from the repository root when a release changes the schema (the old golden files stay:
each later tasktrail must still open, upcast and replay them)::

    python tests/reliability/golden/make_golden.py

It writes ``schema-N.sqlite3`` (N: the schema version, ``PRAGMA user_version``) and
``schema-N.json`` (every task as the projection holds it) beside this script. Time and
event ids are fixed, so the content is the same on every run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import sys
from pathlib import Path

import msgspec

from tasktrail import (
    CancelRequested,
    ChildFinished,
    NewEvent,
    OutputAppended,
    ProgressReported,
    SQLiteEventStore,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)

HERE = Path(__file__).resolve().parent
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z

CLAIM = TaskClaimed(worker_id="host:1:abc", attempt=1)
LIVES: dict[str, list[object]] = {
    "pending": [TaskCreated(agent="coder", prompt="write a parser", priority=2)],
    "starting": [TaskCreated(agent="coder", concurrency_key="gpu"), CLAIM],
    "running": [
        TaskCreated(agent="reviewer", prompt="review", metadata={"pr": 42, "tags": ["a", "b"]}),
        CLAIM,
        TaskStarted(session_id="session-1"),
        OutputAppended(text="looking at the diff\n"),
        ProgressReported(current=1, total=3, message="file 1 of 3"),
    ],
    "completed": [
        TaskCreated(agent="coder", prompt="ünïcödé ✓ 名前", description="done"),
        CLAIM,
        TaskStarted(),
        OutputAppended(text="ok\n", channel="stderr"),
        TaskCompleted(result={"files": 3, "ratio": 0.25, "nested": [[1], {"k": None}]}),
    ],
    "failed": [
        TaskCreated(agent="coder", max_attempts=2),
        CLAIM,
        TaskStarted(),
        TaskRequeued(not_before=START + 60),
        TaskClaimed(worker_id="host:2:def", attempt=2),
        TaskStarted(),
        TaskFailed(error="RuntimeError: boom"),
    ],
    "cancelled": [
        TaskCreated(agent="coder", parent_id="running"),
        CLAIM,
        TaskStarted(),
        CancelRequested(force=True),
        TaskCancelled(forced=True),
    ],
    "scheduled": [  # schema 3: input, a scheduled start, recorded deadlines
        TaskCreated(
            agent="resize",
            input={"image": "a.png", "sizes": [64, 128]},
            not_before=START + 3600,
            task_ttl=7200.0,
            queue_timeout=600.0,
            run_timeout=30.0,
        ),
    ],
    "rerun": [  # schema 3: a rerun of the failed task
        TaskCreated(agent="coder", max_attempts=2, rerun_of="failed"),
        CLAIM,
        TaskStarted(),
        TaskCompleted(result="second time lucky"),
    ],
    "parent": [
        TaskCreated(agent="planner"),
        CLAIM,
        TaskStarted(),
        ChildFinished(child_id="cancelled", state="cancelled"),
    ],
}


async def write(path: Path) -> list[dict[str, object]]:
    """Write the golden log to ``path``; return every task as JSON objects."""
    ticks = itertools.count()
    ids = itertools.count(1)
    async with SQLiteEventStore(path, clock=lambda: START + next(ticks)) as store:
        longest = max(len(events) for events in LIVES.values())
        for step in range(longest):  # interleave the tasks in the log
            for task_id, events in LIVES.items():
                if step < len(events):
                    new = NewEvent(
                        events[step],  # type: ignore[arg-type]
                        actor="golden",
                        reason=f"step {step}",
                        correlation_id="parent" if task_id == "cancelled" else None,
                        event_id=f"golden-{next(ids):04d}",
                    )
                    await store.append(task_id, [new], expected_version=step)
        # schema 5: the control log (a pause in force, and one paused then resumed)
        await store.pause("agent", "planner", actor="golden", reason="schema 5")
        await store.pause("key", "gpu", actor="golden")
        await store.resume("key", "gpu", actor="golden", reason="done")
        tasks = await store.list_tasks()
    return [msgspec.to_builtins(task) for task in tasks]


def main() -> None:
    """Write schema-N.sqlite3 and schema-N.json beside this script."""
    scratch = HERE / "golden.tmp"
    for leftover in HERE.glob("golden.tmp*"):
        leftover.unlink()
    tasks = asyncio.run(write(scratch))
    with sqlite3.connect(scratch) as db:
        (schema,) = db.execute("PRAGMA user_version").fetchone()
    db.close()
    target = HERE / f"schema-{schema}.sqlite3"
    scratch.replace(target)
    (HERE / f"schema-{schema}.json").write_text(json.dumps(tasks, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target.name} ({target.stat().st_size} bytes) and schema-{schema}.json")


if __name__ == "__main__":
    sys.exit(main())
