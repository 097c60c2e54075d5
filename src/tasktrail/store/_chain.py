"""The hash chain: each event's hash covers the previous hash and the event's bytes.

``hash(n) = sha256(hash(n-1) + "\\n" + header(n) + "\\n" + data(n))`` in hex, where
``hash(0)`` is 64 zeros, ``header`` is the compact JSON array
``[sequence, event_id, stream_id, version, type, schema_version, timestamp, actor, reason,
correlation_id]`` and ``data`` is the stored payload JSON, byte for byte. Anyone can
recompute it from the database with a few lines of Python.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

__all__ = ["GENESIS", "event_hash"]

GENESIS: Final = "0" * 64
_encode = msgspec.json.Encoder().encode
_sha256 = hashlib.sha256


def event_hash(
    previous: str,
    sequence: int,
    event_id: str,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    timestamp: float,
    actor: str,
    reason: str | None,
    correlation_id: str | None,
    data: bytes,
) -> str:
    """The hex hash of one event, chained to ``previous``."""
    header = _encode(
        (
            sequence,
            event_id,
            stream_id,
            version,
            event_type,
            schema_version,
            timestamp,
            actor,
            reason,
            correlation_id,
        )
    )
    return _sha256(b"".join((previous.encode(), b"\n", header, b"\n", data))).hexdigest()
