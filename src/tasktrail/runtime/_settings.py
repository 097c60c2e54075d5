"""Checks of the runtime's settings: every duration finite, every count within bounds."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Final

from tasktrail.errors import InvalidInputError

__all__ = ["MAX_COUNT", "MAX_SECONDS", "WorkerSettings", "count", "optional_seconds", "seconds"]

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


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """A worker's settings, checked when made (see :class:`~tasktrail.TaskManager` for
    what each one means)."""

    max_running: int | None
    limits: Mapping[str, int]
    poll_interval: float
    lease_timeout: float
    cancel_grace: float
    start_timeout: float | None
    retry_backoff: float

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.max_running is not None:
            put("max_running", count("max_running", self.max_running))
        put("limits", {
            str(key): count(f"limits[{key!r}]", value, low=0)
            for key, value in (self.limits or {}).items()
        })  # fmt: skip
        put("poll_interval", seconds("poll_interval", self.poll_interval, positive=True))
        put("lease_timeout", seconds("lease_timeout", self.lease_timeout, positive=True))
        put("cancel_grace", seconds("cancel_grace", self.cancel_grace))
        put("start_timeout", optional_seconds("start_timeout", self.start_timeout, positive=True))
        put("retry_backoff", seconds("retry_backoff", self.retry_backoff))
        if self.poll_interval >= self.lease_timeout:
            raise InvalidInputError(
                f"poll_interval ({self.poll_interval:g} s) must be shorter than lease_timeout "
                f"({self.lease_timeout:g} s): a worker heartbeats between its rounds"
            )
