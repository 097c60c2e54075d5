"""Times and durations as people type them on a command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Final

from tasktrail.errors import InvalidInputError

__all__ = ["parse_duration", "parse_moment", "parse_since"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``10m``, ``2h``, ``1d`` or ``1w``."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInputError(
            f"cannot read {text!r} as a duration: use seconds or a number with s, m, h, d "
            "or w (90, 10m, 2h, 1d)"
        )
    return float(match[1]) * _UNITS[match[2] or "s"]


def parse_moment(text: str) -> datetime:
    """Unix seconds, an ISO 8601 date and time, or a time of day (today), as UTC.

    Without an offset the time is local time.
    """
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.combine(datetime.now().date(), dt_time.fromisoformat(text))
        except ValueError as err:
            raise InvalidInputError(
                f"cannot read {text!r} as a time: use ISO 8601 (2026-11-21T08:30:00, 08:30) "
                "or Unix seconds"
            ) from err
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC)


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A moment given as a duration ago (``2h``: two hours ago) or as a time."""
    if _DURATION.match(text) and not text.strip().replace(".", "").isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(text))
    return parse_moment(text)
