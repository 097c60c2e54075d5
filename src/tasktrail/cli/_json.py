"""The one JSON convention of every ``--json`` (see ``docs/reference/json.md``).

* Names are the Python API's: a task is :class:`~tasktrail.Task`'s fields, an event
  :class:`~tasktrail.RecordedEvent`'s (its payload under ``payload``, tagged by ``type``).
* Every field is present; a field without a value is ``null`` (the database omits default
  values to stay small; the command line never does).
* Every time is an ISO 8601 string in UTC ending in ``Z``: the record's datetimes and its
  times held as Unix seconds (a field named ``timestamp``, ``not_before`` or ``*_at``).
  Durations stay numbers of seconds. The user's own values (``input``, ``result``,
  ``metadata``, an output's ``text``) are passed through untouched.
* A command that prints one record prints one JSON object; a command that prints several
  prints one object per line (JSON lines), as it reads them: ``jq -c``, ``grep``, ``head``
  work on any size.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

__all__ = ["dumps", "iso", "to_json"]

_encode = msgspec.json.Encoder(order="deterministic").encode
_USER_FIELDS: Final = frozenset({"input", "result", "metadata", "text"})
_ZERO: Final = timedelta(0)
"""Fields holding the user's own values: never converted."""


def iso(moment: datetime | float | int | None) -> str | None:
    """A time as ISO 8601 in UTC with a ``Z`` (microseconds when it has any)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _is_time(name: str) -> bool:
    return name == "timestamp" or name == "not_before" or name.endswith("_at")


def _utc(moment: datetime) -> datetime:
    return moment if moment.utcoffset() == _ZERO else moment.astimezone(UTC)


def to_json(value: Any) -> Any:
    """``value`` as JSON builtins under the convention (records: every field, times ISO).

    Times are left as aware UTC datetimes, which msgspec writes as ISO 8601 with ``Z``.
    """
    if isinstance(value, msgspec.Struct):
        config = value.__struct_config__
        out: dict[str, Any] = {}
        if config.tag_field is not None:
            out[config.tag_field] = config.tag
        for name in value.__struct_fields__:
            item = getattr(value, name)
            if item is None or name in _USER_FIELDS or isinstance(item, str | bool):
                out[name] = item
            elif isinstance(item, datetime):
                out[name] = _utc(item)
            elif isinstance(item, int | float) and _is_time(name):
                out[name] = datetime.fromtimestamp(item, UTC)
            elif isinstance(item, int | float):
                out[name] = item
            else:
                out[name] = to_json(item)
        return out
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """One line of JSON of ``value`` under the convention, keys in a stable order."""
    return _encode(to_json(value)).decode()
