"""Checks on what callers hand the store, before anything is queued or written."""

from __future__ import annotations

import unicodedata
import urllib.parse
from typing import Final

from tasktrail.errors import InvalidInputError, InvalidTaskIdError

__all__ = [
    "MAX_TASK_ID_LENGTH",
    "check_actor",
    "check_task_id",
    "redact_url",
    "server_address",
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


def check_actor(actor: object) -> str:
    """Return ``actor`` if it is a non-empty printable ``str`` of at most 255 characters."""
    if not isinstance(actor, str) or not actor or len(actor) > 255 or not actor.isprintable():
        raise InvalidInputError(f"invalid actor {actor!r}: expected a short printable name")
    return actor


def redact_url(url: str) -> str:
    """``url`` without its password, fit for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("@", 1)[-1]
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def server_address(url: str) -> str:
    """The ``host:port`` (or hosts, or socket directory) a PostgreSQL URL connects to, for
    messages; the default port is 5432, the default host the local socket."""
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
    except ValueError:
        return "?"
    hosts = parts.netloc.rpartition("@")[2] or ",".join(query.get("host", []))
    port = ",".join(query.get("port", [])) or "5432"
    if not hosts:
        return f"the local socket (port {port})"
    named = []
    for host in hosts.split(","):
        if host.startswith("/"):
            named.append(f"the socket in {host}")
        elif host.endswith("]") or ":" not in host:
            named.append(f"{host}:{port}")
        else:
            named.append(host)
    return ", ".join(named)
