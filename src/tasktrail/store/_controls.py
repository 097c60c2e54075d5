"""Pauses: an agent or a concurrency key that no worker may claim a task of, for now.

An operator pauses with ``tasktrail pause --agent NAME`` (or ``--key KEY``) and resumes
with ``tasktrail resume``. Every pause and resume is a :class:`Control`, a row of the
append-only ``controls`` table (its triggers refuse UPDATE and DELETE, as the event log's
do): what was done to which target, by whom, when and why. The pauses in force are kept
beside it in ``pauses``, written in the same transaction, under the store's write lock.

The claim step reads ``pauses`` inside the claim's own write transaction (the
:class:`~tasktrail.store._ops.ReadPaused` op), so once ``pause()`` has returned no
worker of any process or host claims a task of that target; tasks already starting or
running go on to their end. Pauses are not events of the task log: a pause belongs to no
task, and the task log's streams are tasks (see ``docs/reference/store.md``).

Written once for both backends: the SQL here takes SQLite's ``?`` or PostgreSQL's ``$n``
through :class:`~tasktrail.store._query.Params`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from tasktrail.errors import InvalidInputError

__all__ = [
    "CONTROL_COLUMNS",
    "KINDS",
    "Control",
    "check_control",
    "control",
]

KINDS: Final = ("agent", "key")
MAX_TARGET: Final = 255
CONTROL_COLUMNS: Final = "seq, action, kind, target, recorded_at, actor, reason"
"""The columns of ``controls``, in the order of :class:`Control`'s fields."""

Kind = Literal["agent", "key"]


class Control(msgspec.Struct, frozen=True):
    """One pause or resume, as the control log keeps it."""

    sequence: int
    """Its position in the control log: 1, 2, 3 ... (PostgreSQL may leave holes)."""
    action: Literal["pause", "resume"]
    kind: Kind
    """``agent`` (the tasks of that agent) or ``key`` (the tasks whose concurrency key,
    else agent, is that: the key limits count under)."""
    target: str
    timestamp: float
    """Unix time it was recorded."""
    actor: str
    reason: str | None = None


def control(row: Sequence[Any]) -> Control:
    """A row of :data:`CONTROL_COLUMNS` as a :class:`Control`."""
    return Control(int(row[0]), row[1], row[2], row[3], float(row[4]), row[5], row[6])


def check_control(kind: object, target: object, actor: object) -> tuple[Kind, str, str]:
    """The arguments of ``pause``/``resume``, checked: InvalidInputError when unusable."""
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be 'agent' or 'key', not {kind!r}")
    if (
        not isinstance(target, str)
        or not target
        or len(target) > MAX_TARGET
        or not target.isprintable()
        or target != target.strip()
    ):
        raise InvalidInputError(
            f"a paused {kind} is a non-empty printable str of at most {MAX_TARGET} characters "
            f"without surrounding spaces, not {target!r}"
        )
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInputError(f"actor must be a non-empty str, not {actor!r}")
    return kind, target, actor


_IN_FORCE: Final = (
    "SELECT c.seq, c.action, c.kind, c.target, c.recorded_at, c.actor, c.reason "
    "FROM pauses p JOIN controls c ON c.seq = p.control"
)
LIST_PAUSES: Final = _IN_FORCE + " ORDER BY c.seq"
"""Every pause in force, oldest first (the control that made each)."""
READ_PAUSED: Final = "SELECT kind, target FROM pauses"
"""What a claim leaves out: (kind, target) of every pause in force."""


def paused_sets(rows: Sequence[Sequence[Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paused agents, paused keys) from rows of :data:`READ_PAUSED`, sorted."""
    agents = sorted(str(r[1]) for r in rows if r[0] == "agent")
    keys = sorted(str(r[1]) for r in rows if r[0] == "key")
    return tuple(agents), tuple(keys)


def write_control_sqlite(
    conn: Any, *, action: str, kind: str, target: str, actor: str, reason: str | None, now: float
) -> Control | None:
    """Record a pause or resume on SQLite's writing connection, in its own ``BEGIN
    IMMEDIATE`` transaction (see :func:`_decide`)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            _IN_FORCE + " WHERE p.kind = ? AND p.target = ?", (kind, target)
        ).fetchone()
        current = None if row is None else control(row)
        result, write = _decide(action, current)
        if write:
            cursor = conn.execute(
                "INSERT INTO controls (action, kind, target, recorded_at, actor, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (action, kind, target, now, actor, reason),
            )
            result = Control(int(cursor.lastrowid), action, kind, target, now, actor, reason)  # type: ignore[arg-type]
            if action == "pause":
                conn.execute("INSERT INTO pauses VALUES (?, ?, ?)", (kind, target, result.sequence))
            else:
                conn.execute("DELETE FROM pauses WHERE kind = ? AND target = ?", (kind, target))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


async def write_control_pg(
    conn: Any, *, action: str, kind: str, target: str, actor: str, reason: str | None, now: float
) -> Control | None:
    """Record a pause or resume on PostgreSQL, inside a transaction that holds the log's
    advisory lock (the one every claim takes)."""
    row = await conn.fetchrow(_IN_FORCE + " WHERE p.kind = $1 AND p.target = $2", kind, target)
    current = None if row is None else control(row)
    result, write = _decide(action, current)
    if not write:
        return result
    sequence = await conn.fetchval(
        "INSERT INTO controls (action, kind, target, recorded_at, actor, reason) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        action, kind, target, now, actor, reason,
    )  # fmt: skip
    if action == "pause":
        await conn.execute("INSERT INTO pauses VALUES ($1, $2, $3)", kind, target, sequence)
    else:
        await conn.execute("DELETE FROM pauses WHERE kind = $1 AND target = $2", kind, target)
    return Control(int(sequence), action, kind, target, now, actor, reason)  # type: ignore[arg-type]


def _decide(action: str, current: Control | None) -> tuple[Control | None, bool]:
    """(the answer when nothing is written, whether to write): a pause of what is paused
    answers the pause in force; a resume of what is not paused answers ``None``."""
    if action == "pause":
        return current, current is None
    return None, current is not None
