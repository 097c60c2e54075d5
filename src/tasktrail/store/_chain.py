"""The hash chain: each event's hash covers the previous hash and the event's bytes.

``hash(n) = sha256(hash(n-1) + "\\n" + header(n) + "\\n" + data(n))`` in hex, where
``hash(0)`` is 64 zeros, ``header`` is the compact JSON array
``[sequence, event_id, stream_id, version, type, schema_version, timestamp, actor, reason,
correlation_id]`` and ``data`` is the stored payload JSON, byte for byte. Anyone can
recompute it from the database with a few lines of Python.

:func:`walk_chain` is the one loop that checks stored events against it, with the one set
of messages for what it finds: a whole-log pass (:func:`tasktrail.store._scan.check_chain`)
and a range checked in a helper process (:mod:`tasktrail.store._verify_range`) both use it.
This module imports little: that helper process imports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec

__all__ = [
    "GENESIS",
    "MISMATCH",
    "MISSING",
    "MOVED",
    "EventHeader",
    "Walk",
    "event_hash",
    "walk_chain",
]

GENESIS: Final = "0" * 64
MISSING: Final = "this event is missing from the log"
MISMATCH: Final = "its stored hash does not match its content"
MOVED: Final = "sequence numbers start at 1; this event was moved"
_encode = msgspec.json.Encoder().encode
_sha256 = hashlib.sha256


EventHeader: TypeAlias = tuple[int, str, str, int, str, int, float, str, "str | None", "str | None"]
"""(sequence, event_id, stream_id, version, type, schema_version, timestamp, actor, reason,
correlation_id): the envelope of one event, in the order the hash covers it."""


def event_hash(previous: str, header: EventHeader, data: bytes) -> str:
    """The hex hash of one event (its envelope and payload bytes), chained to ``previous``."""
    return _sha256(b"".join((previous.encode(), b"\n", _encode(header), b"\n", data))).hexdigest()


class Walk(NamedTuple):
    """How far :func:`walk_chain` got."""

    good: int
    """Events checked and found good."""
    last_hash: str
    """The hash of the last good event (the ``previous`` given, if none)."""
    expected: int
    """The sequence number the next event must have."""
    bad: int | None = None
    """The first bad or missing sequence number, if any."""
    why: str | None = None
    """What is wrong with it (:data:`MISSING` or :data:`MISMATCH`)."""


def walk_chain(rows: Iterable[Sequence[Any]], *, previous: str, expected: int) -> Walk:
    """Check event ``rows`` (``seq``, the rest of the header, data as bytes, stored hash;
    in sequence order) against the chain, from the event ``expected`` whose predecessor's
    hash is ``previous``; stops at the first bad or missing event."""
    good = 0
    for row in rows:
        sequence = row[0]
        if sequence != expected:
            return Walk(good, previous, expected, expected, MISSING)
        digest = event_hash(previous, tuple(row[:10]), row[10])
        if digest != row[11]:
            return Walk(good, previous, expected, sequence, MISMATCH)
        previous, expected, good = digest, sequence + 1, good + 1
    return Walk(good, previous, expected)
