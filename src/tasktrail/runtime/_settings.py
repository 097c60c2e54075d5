"""Checks of the runtime's settings: every duration finite, every count within bounds."""

from __future__ import annotations

import math
from typing import Final

from tasktrail.errors import InvalidInputError

__all__ = ["MAX_COUNT", "MAX_SECONDS", "count", "optional_seconds", "seconds"]

MAX_SECONDS: Final = 10 * 365 * 86400.0
"""The longest duration a setting accepts (ten years): longer means "never", say ``None``."""
MAX_COUNT: Final = 1_000_000
"""The largest count a setting accepts (``max_running``, a limit, ``max_attempts``)."""


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a duration in seconds, or InvalidInputError naming the setting.

    Refused: what is not a number, NaN, infinities, negatives (and zero if ``positive``),
    and anything over :data:`MAX_SECONDS`.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidInputError(f"{name} must be {bound} seconds, not {value!r}")
    if value > MAX_SECONDS:
        raise InvalidInputError(
            f"{name} must be at most {MAX_SECONDS:g} seconds (ten years), not {value!r}; "
            "use None for no limit where the setting allows it"
        )
    return float(value)


def optional_seconds(name: str, value: object, *, positive: bool = False) -> float | None:
    """Like :func:`seconds`, with ``None`` meaning unlimited."""
    return None if value is None else seconds(name, value, positive=positive)


def count(name: str, value: object, *, low: int = 1, high: int = MAX_COUNT) -> int:
    """``value`` as a whole number in ``low..high``, or InvalidInputError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise InvalidInputError(f"{name} must be between {low} and {high}, not {value!r}")
    return value
