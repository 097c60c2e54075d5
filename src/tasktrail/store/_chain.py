"""The hash chain: each event's hash covers the previous hash and the event's bytes.

``hash(n) = sha256(hash(n-1) + "\\n" + header(n) + "\\n" + data(n))`` in hex, where
``hash(0)`` is 64 zeros, ``header`` is the compact JSON array
``[sequence, event_id, stream_id, version, type, schema_version, timestamp, actor, reason,
correlation_id]`` and ``data`` is the stored payload JSON, byte for byte. Anyone can
recompute it from the database with a few lines of Python.
"""

from __future__ import annotations

import hashlib
from typing import Final, TypeAlias

import msgspec

__all__ = ["GENESIS", "EventHeader", "event_hash"]

GENESIS: Final = "0" * 64
_encode = msgspec.json.Encoder().encode
_sha256 = hashlib.sha256


EventHeader: TypeAlias = tuple[int, str, str, int, str, int, float, str, "str | None", "str | None"]
"""(sequence, event_id, stream_id, version, type, schema_version, timestamp, actor, reason,
correlation_id): the envelope of one event, in the order the hash covers it."""


def event_hash(previous: str, header: EventHeader, data: bytes) -> str:
    """The hex hash of one event (its envelope and payload bytes), chained to ``previous``."""
    return _sha256(b"".join((previous.encode(), b"\n", _encode(header), b"\n", data))).hexdigest()
