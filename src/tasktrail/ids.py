"""What a task id and an actor may be: core rules, checked by the store and the runtime."""

from __future__ import annotations

import os
import threading
import unicodedata
from typing import Final

from tasktrail.errors import InvalidInputError, InvalidTaskIdError

__all__ = [
    "MAX_ACTOR_LENGTH",
    "MAX_TASK_ID_LENGTH",
    "check_actor",
    "check_task_id",
    "new_task_id",
    "random_hex",
]

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


class _Entropy:
    """Random bytes from the OS, read 4 KiB at a time: one system call per ~200 ids
    instead of one each. Thread-safe; a forked child starts from fresh bytes (it must never
    hand out its parent's)."""

    _BLOCK: Final = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0

    def take(self, size: int) -> bytes:
        with self._lock:
            end = self._offset + size
            if end > len(self._buffer):
                self._buffer, self._offset, end = os.urandom(max(self._BLOCK, size)), 0, size
            chunk = self._buffer[self._offset : end]
            self._offset = end
            return chunk


_entropy = _Entropy()


def random_hex(size: int) -> str:
    """``size`` random bytes from the OS, as hex (``2 * size`` digits)."""
    return _entropy.take(size).hex()


def new_task_id() -> str:
    """A fresh task id: 32 random hex digits."""
    return random_hex(16)
