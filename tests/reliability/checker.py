"""The one invariant checker of the reliability suite, over the raw SQLite file.

It reads the database with the stdlib :mod:`sqlite3` module only (never through
tasktrail), with its own copy of the legal transition table and its own implementation of
the documented hash chain, so a bug in tasktrail cannot hide itself from it. A PostgreSQL
twin reports the same field names.

Usage::

    report = check(path, acknowledged=[("task-1", 3)], batches=[("id-a", "id-b")])
    assert report.ok, report
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COUNTS",
    "GENESIS",
    "LEGAL",
    "TRIGGER_OF",
    "CheckReport",
    "chain_hash",
    "check",
    "judge",
]

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
"""The lifecycle trigger of every event type."""

_LIVE = ("pending", "starting", "running")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
COUNTS = (
    "missing_acknowledged",
    "partial_batches",
    "illegal_transitions",
    "version_gaps",
    "events_after_terminal",
    "projection_mismatches",
    "chain_breaks",
    "integrity_failures",
)
"""The counts of broken invariants; every one must be 0."""


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
    details: tuple[str, ...] = field(default=(), compare=False)
    """The first few problems, as text, for the assertion message."""

    @property
    def ok(self) -> bool:
        """Whether no invariant is broken."""
        return not any(getattr(self, name) for name in COUNTS)


def chain_hash(previous: str, row: Sequence[Any]) -> str:
    """The documented hash of one event row (seq .. correlation_id, data bytes)."""
    header = json.dumps(list(row[:10]), separators=(",", ":"), ensure_ascii=False)
    data = row[10] if isinstance(row[10], bytes) else str(row[10]).encode()
    return hashlib.sha256(
        previous.encode() + b"\n" + header.encode("utf-8", "surrogatepass") + b"\n" + data
    ).hexdigest()


class _Fold:
    """The facts of one task the checker tracks while it walks the log."""

    __slots__ = ("agent", "attempt", "cancel", "last_seq", "state", "version", "worker")

    def __init__(self) -> None:
        self.state: str | None = None
        self.cancel = False
        self.version = 0
        self.last_seq = 0
        self.agent: str | None = None
        self.attempt = 0
        self.worker: str | None = None


def check(
    path: str | Path,
    *,
    acknowledged: Iterable[tuple[str, int]] = (),
    batches: Iterable[Sequence[str]] = (),
) -> CheckReport:
    """Check every invariant of the database at ``path``.

    ``acknowledged``: (task id, version) pairs whose append returned to a caller; each
    must be in the log. ``batches``: the event ids of appends that may or may not have
    committed; each must be in the log wholly or not at all.
    """
    integrity: list[str] = []
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, isolation_level=None)
    try:
        db.text_factory = bytes
        db.execute("BEGIN")  # one snapshot for every read
        for (line,) in db.execute("PRAGMA integrity_check"):
            if line != b"ok":
                integrity.append(line.decode(errors="replace"))
        raw_rows = db.execute(
            "SELECT seq, event_id, stream_id, version, type, schema_version, recorded_at, "
            "actor, reason, correlation_id, CAST(data AS BLOB), hash FROM events ORDER BY seq"
        ).fetchall()
        live = {
            row[0].decode(): (row[1].decode(), row[2].decode(), row[3], row[4], _loads(row[5]))
            for row in db.execute(
                "SELECT id, state, agent, version, last_seq, CAST(record AS BLOB) FROM tasks"
            )
        }
        db.execute("COMMIT")
    finally:
        db.close()
    rows = []
    for raw in raw_rows:  # text as str, the payload as the bytes the hash covers
        row = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in raw]
        row[10] = raw[10]
        rows.append(row)
    return judge(rows, live, integrity, acknowledged=acknowledged, batches=batches)


def judge(
    rows: Sequence[Sequence[Any]],
    live: Mapping[str, tuple[str, str, int, int, Any]],
    integrity: Iterable[str],
    *,
    acknowledged: Iterable[tuple[str, int]] = (),
    batches: Iterable[Sequence[str]] = (),
) -> CheckReport:
    """Judge a log and its projection, read raw by a backend's ``check``: the whole checker
    but the reading, shared by the SQLite and PostgreSQL checkers.

    ``rows``: every event row in sequence order, its payload (index 10) as bytes.
    ``live``: per task id, the projection row's state, agent, version, last sequence and
    decoded record. ``integrity``: the backend's own integrity problems.
    """
    problems: list[str] = []
    counts = dict.fromkeys(COUNTS, 0)

    def problem(kind: str, text: str) -> None:
        counts[kind] += 1
        if len(problems) < 20:
            problems.append(f"{kind}: {text}")

    for line in integrity:
        problem("integrity_failures", line)
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
        previous, expected_seq = str(row[11]), seq + 1
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
        if task.state is None:
            task.agent = _field(row[10], "agent")
        if trigger == "claim":
            task.attempt = int(_field(row[10], "attempt") or 0)
            task.worker = _field(row[10], "worker_id")
        task.cancel = task.cancel or trigger == "request_cancel"
        task.state = after

    for task_id, task in tasks.items():
        if task_id not in live:
            problem("projection_mismatches", f"{task_id!r} has events but no tasks row")
            continue
        state, agent, version, last_seq, record = live[task_id]
        seen = (
            state, agent, version, last_seq, record.get("state"), record.get("version"),
            record.get("attempt", 0), record.get("worker_id"),
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


def _field(data: bytes, name: str) -> Any:
    """One top-level field of an event's JSON payload (``None`` if absent or unreadable)."""
    try:
        payload = _loads(data)
    except ValueError:
        return None
    return payload.get(name) if isinstance(payload, dict) else None


def _loads(data: bytes) -> Any:
    """``json.loads`` with room for the deepest nesting tasktrail accepts."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return json.loads(data)
    finally:
        sys.setrecursionlimit(limit)
