"""Database targets as messages show them: URLs without their passwords, server addresses.

(The rules of task ids and actors are core rules: :mod:`tasktrail.ids`.)"""

from __future__ import annotations

import urllib.parse

__all__ = ["redact_url", "server_address"]


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
