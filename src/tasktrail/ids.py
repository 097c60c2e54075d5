"""What a task id and an actor may be: core rules, checked by the store and the runtime."""

from __future__ import annotations

import unicodedata
from typing import Final

from tasktrail.errors import InvalidInputError, InvalidTaskIdError

__all__ = ["MAX_ACTOR_LENGTH", "MAX_TASK_ID_LENGTH", "check_actor", "check_task_id"]

MAX_TASK_ID_LENGTH: Final = 255


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it is a usable task id, else raise :class:`InvalidTaskIdError`.

    A task id is a non-empty ``str`` of at most 255 characters, valid UTF-8 (no lone
    surrogates), with no control characters (NUL, newline, ...).
    """
    if not isinstance(task_id, str):
        raise InvalidTaskIdError(task_id, f"expected a str, got {type(task_id).__name__}")
    if not task_id:
        raise InvalidTaskIdError(task_id, "it is empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidTaskIdError(
            task_id[:40] + "...", f"it has {len(task_id)} characters, over {MAX_TASK_ID_LENGTH}"
        )
    if not task_id.isprintable():
        for ch in task_id:
            category = unicodedata.category(ch)
            if category == "Cs":
                raise InvalidTaskIdError(task_id, f"it holds a lone surrogate U+{ord(ch):04X}")
            if category in ("Cc", "Cf", "Zl", "Zp") or ch == "\x00":
                raise InvalidTaskIdError(task_id, f"it holds the control character U+{ord(ch):04X}")
    if task_id != task_id.strip():
        raise InvalidTaskIdError(task_id, "it starts or ends with whitespace")
    return task_id


MAX_ACTOR_LENGTH: Final = 255


def check_actor(actor: object) -> str:
    """Return ``actor`` if it is a non-empty printable ``str`` of at most 255 characters."""
    if (
        not isinstance(actor, str)
        or not actor
        or len(actor) > MAX_ACTOR_LENGTH
        or not actor.isprintable()
    ):
        raise InvalidInputError(f"invalid actor {actor!r}: expected a short printable name")
    return actor
