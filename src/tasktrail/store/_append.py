"""Checking and encoding one append, in the caller's task, before it is queued: what may
be appended at all, whatever the database holds (that is :mod:`._plan`'s to decide)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tasktrail.errors import InvalidInputError, PayloadTooLargeError
from tasktrail.events import Event, NewEvent, as_stored, encode_payload
from tasktrail.ids import check_actor, check_task_id
from tasktrail.store._plan import PendingAppend

__all__ = ["prepare_append"]


def prepare_append(
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int | None,
    *,
    max_event_bytes: int,
) -> PendingAppend:
    """Validate and encode one append (nothing is queued or written yet).

    A NUL character is refused in the envelope's text and in the payload fields stored as
    columns (agent, parent, concurrency key) on every backend: a PostgreSQL ``text``
    column cannot hold it, and the same append must mean the same on both. Inside the
    rest of a payload it is escaped JSON, accepted everywhere.
    """
    check_task_id(stream_id)
    if not events:
        raise InvalidInputError("append needs at least one event")
    if expected_version is not None and (
        not isinstance(expected_version, int) or expected_version < 0
    ):
        raise InvalidInputError(f"expected_version must be an int >= 0, not {expected_version!r}")
    data: list[bytes] = []
    stored: list[NewEvent] = []
    for new in events:
        if not isinstance(new, NewEvent) or not isinstance(new.payload, Event):
            raise InvalidInputError(f"expected NewEvent(payload=<Event>), got {new!r:.80}")
        check_actor(new.actor)
        encoded = encode_payload(new.payload)
        if len(encoded) > max_event_bytes:
            raise PayloadTooLargeError(len(encoded), max_event_bytes)
        texts = [new.reason, new.correlation_id, new.event_id]
        texts += [getattr(new.payload, name, None) for name in _COLUMN_FIELDS]
        for text in texts:
            if text is not None:
                try:
                    text.encode()
                except (UnicodeEncodeError, AttributeError) as err:
                    raise InvalidInputError(f"invalid text {text!r:.40}: {err}") from err
                if "\x00" in text:
                    raise InvalidInputError(
                        f"invalid text {text!r:.40}: a NUL character cannot be stored here"
                    )
        data.append(encoded)
        payload = as_stored(new.payload, encoded)
        stored.append(
            new if payload is new.payload else msgspec.structs.replace(new, payload=payload)
        )
    return PendingAppend(stream_id, stored, data, expected_version)


_COLUMN_FIELDS = ("agent", "parent_id", "concurrency_key")
