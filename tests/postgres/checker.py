"""The invariant checker over a raw PostgreSQL tasktrail schema (the twin of the SQLite one
in ``tests/reliability/checker.py``, with the same field names).

It reads the tables with asyncpg only (never through tasktrail), in one snapshot, with its
own copy of the legal transition table and its own implementation of the documented hash
chain, so a bug in tasktrail cannot hide itself from it.

Usage::

    report = await check(url, acknowledged=[("task-1", 3)], batches=[("id-a", "id-b")])
    assert report.ok, report.details
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

__all__ = ["CheckReport", "check"]

GENESIS = "0" * 64
TRIGGER_OF: dict[str, str] = {
    "task.created": "create",
    "task.claimed": "claim",
    "task.started": "start",
    "task.completed": "complete",
    "task.failed": "fail",
    "task.cancelled": "cancel",
    "task.requeued": "requeue",
    "task.cancel_requested": "request_cancel",
    "task.output": "annotate",
    "task.progress": "annotate",
    "task.child_finished": "annotate",
}
_LIVE = ("pending", "starting", "running")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_FIELDS = (
    "missing_acknowledged",
    "partial_batches",
    "illegal_transitions",
    "version_gaps",
    "events_after_terminal",
    "projection_mismatches",
    "chain_breaks",
    "integrity_failures",
)


def _legal() -> dict[tuple[str | None, bool, str], str]:
    """(state, cancel requested, trigger) -> next state, written out from SPEC section 1."""
    table: dict[tuple[str | None, bool, str], str] = {(None, False, "create"): "pending"}
    for flag in (False, True):
        for state in _LIVE:
            table[(state, flag, "cancel")] = "cancelled"
            table[(state, flag, "request_cancel")] = state
            if not flag:
                table[(state, flag, "fail")] = "failed"
        for state in ("starting", "running"):
            table[(state, flag, "annotate")] = state
            if not flag:
                table[(state, flag, "requeue")] = "pending"
    table[("pending", False, "claim")] = "starting"
    table[("starting", False, "start")] = "running"
    table[("running", False, "complete")] = "completed"
    return table


LEGAL = _legal()


@dataclass(frozen=True)
class CheckReport:
    """What the checker found; every count but ``events`` and ``tasks`` must be 0."""

    events: int
    tasks: int
    missing_acknowledged: int
    partial_batches: int
    illegal_transitions: int
    version_gaps: int
    events_after_terminal: int
    projection_mismatches: int
    chain_breaks: int
    integrity_failures: int
    """Here: append-only triggers missing or disabled."""
    details: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ok(self) -> bool:
        """Whether no invariant is broken."""
        return not any(getattr(self, name) for name in _FIELDS)


def chain_hash(previous: str, row: Sequence[Any]) -> str:
    """The documented hash of one event row (seq .. correlation_id, data bytes)."""
    header = json.dumps(list(row[:10]), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(
        previous.encode() + b"\n" + header.encode() + b"\n" + row[10].encode()
    ).hexdigest()


class _Fold:
    __slots__ = ("agent", "attempt", "cancel", "last_seq", "state", "version", "worker")

    def __init__(self) -> None:
        self.state: str | None = None
        self.cancel = False
        self.version = 0
        self.last_seq = 0
        self.agent: str | None = None
        self.attempt = 0
        self.worker: str | None = None


async def check(
    url: str,
    *,
    acknowledged: Iterable[tuple[str, int]] = (),
    batches: Iterable[Sequence[str]] = (),
) -> CheckReport:
    """Check every invariant of the tasktrail tables at ``url`` (its search_path schema).

    ``acknowledged``: (task id, version) pairs whose append returned to a caller; each
    must be in the log. ``batches``: the event ids of appends that may or may not have
    committed; each must be in the log wholly or not at all.
    """
    problems: list[str] = []
    counts = dict.fromkeys(_FIELDS, 0)

    def problem(kind: str, text: str) -> None:
        counts[kind] += 1
        if len(problems) < 20:
            problems.append(f"{kind}: {text}")

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(
                "SELECT seq, event_id, stream_id, version, type, schema_version, recorded_at, "
                "actor, reason, correlation_id, data, hash FROM events ORDER BY seq"
            )
            live = {
                row[0]: row
                for row in await conn.fetch(
                    "SELECT id, state, agent, version, last_seq, record FROM tasks"
                )
            }
            triggers = {
                row[0]
                for row in await conn.fetch(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass "
                    "AND tgenabled <> 'D'"
                )
            }
    finally:
        await conn.close()
    for name in ("events_append_only_update", "events_append_only_delete"):
        if name not in triggers:
            problem("integrity_failures", f"trigger {name} is missing or disabled")

    tasks: dict[str, _Fold] = {}
    stored: set[str] = set()
    versions: set[tuple[str, int]] = set()
    previous, expected_seq = GENESIS, 1
    for row in rows:
        seq, event_id, stream, version, kind = row[0], row[1], row[2], row[3], row[4]
        if seq != expected_seq:
            problem("chain_breaks", f"sequence {expected_seq} missing (next is {seq})")
        if chain_hash(previous, row) != row[11]:
            problem("chain_breaks", f"hash of sequence {seq} does not match")
        previous, expected_seq = row[11], seq + 1
        stored.add(event_id)
        versions.add((stream, version))
        task = tasks.setdefault(stream, _Fold())
        if version != task.version + 1:
            problem("version_gaps", f"{stream!r} goes from version {task.version} to {version}")
        task.version, task.last_seq = version, seq
        if task.state in TERMINAL:
            problem("events_after_terminal", f"{kind} at sequence {seq} after {task.state}")
            continue
        trigger = TRIGGER_OF.get(kind, "?")
        after = LEGAL.get((task.state, task.cancel, trigger))
        if after is None:
            problem("illegal_transitions", f"{kind} at sequence {seq} in state {task.state}")
            continue
        payload = json.loads(row[10])
        if task.state is None:
            task.agent = payload.get("agent")
        if trigger == "claim":
            task.attempt = int(payload.get("attempt") or 0)
            task.worker = payload.get("worker_id")
        task.cancel = task.cancel or trigger == "request_cancel"
        task.state = after

    for task_id, task in tasks.items():
        live_row = live.get(task_id)
        if live_row is None:
            problem("projection_mismatches", f"{task_id!r} has events but no tasks row")
            continue
        record = json.loads(live_row[5])
        seen = (
            live_row[1], live_row[2], live_row[3], live_row[4], record.get("state"),
            record.get("version"), record.get("attempt", 0), record.get("worker_id"),
            record.get("cancel_requested", False),
        )  # fmt: skip
        want = (
            task.state, task.agent, task.version, task.last_seq, task.state, task.version,
            task.attempt, task.worker, task.cancel,
        )  # fmt: skip
        if seen != want:
            problem("projection_mismatches", f"{task_id!r}: row {seen} != log {want}")
    for task_id in live.keys() - tasks.keys():
        problem("projection_mismatches", f"{task_id!r} has a tasks row but no events")

    for task_id, version in acknowledged:
        if (task_id, version) not in versions:
            problem("missing_acknowledged", f"{task_id!r} version {version}")
    for ids in batches:
        present = sum(event_id in stored for event_id in ids)
        if 0 < present < len(ids):
            problem("partial_batches", f"{present} of {len(ids)} events of {ids[0]!r}")

    return CheckReport(events=len(rows), tasks=len(tasks), details=tuple(problems), **counts)
