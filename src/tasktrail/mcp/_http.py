"""Streamable HTTP: the MCP endpoint behind a bearer token and an Origin check.

Every request first passes :class:`Guard`: on a loopback address a ``Host`` that is not
this machine's gets 421 and a browser page from another origin (an ``Origin`` header that
is not this machine's: DNS rebinding) 403; a request without the right
``Authorization: Bearer`` token gets 401. None of them reaches the MCP server, so none
changes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import secrets
import socket
import urllib.parse
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Final

import uvicorn
from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tasktrail.errors import InvalidInputError

__all__ = ["ENDPOINT", "TOKEN_ENV", "Guard", "HttpOptions", "new_token", "serve_http"]

ENDPOINT: Final = "/mcp"
TOKEN_ENV: Final = "TASKTRAIL_MCP_TOKEN"
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def new_token() -> str:
    """A fresh bearer token (256 random bits)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class HttpOptions:
    """Where and how ``tasktrail mcp --http`` listens."""

    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    """0 picks a free port (printed at start)."""
    allowed_origins: tuple[str, ...] = ()
    """Origins allowed besides this machine's own (http(s)://localhost, 127.0.0.1, [::1])."""

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise InvalidInputError(
                "the MCP token must be at least 16 characters; unset TASKTRAIL_MCP_TOKEN to get "
                "a generated one"
            )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: 421 for a foreign ``Host`` (with ``check_host``), 403 for a foreign
    ``Origin``, 401 without the bearer token."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        allowed_origins: Collection[str] = (),
        check_host: bool = True,
    ) -> None:
        self.app = app
        self._token = token.encode()
        self._origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self._check_host = check_host

    @staticmethod
    def host_allowed(host: str | None) -> bool:
        """Whether a ``Host`` header names this machine (a loopback name, any port)."""
        if not host:
            return False
        name = urllib.parse.urlsplit(f"//{host}").hostname
        return _is_loopback(name)

    def origin_allowed(self, origin: str) -> bool:
        """This machine's own pages (any port), or one of the allowed origins."""
        if origin.rstrip("/").lower() in self._origins:
            return True
        parts = urllib.parse.urlsplit(origin)
        return parts.scheme in ("http", "https") and _is_loopback(parts.hostname)

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (compared in constant time)."""
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self._token
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._check_host and not self.host_allowed(headers.get("host")):
            refused = JSONResponse({"error": "this server answers only to localhost"}, 421)
            await refused(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin):
            refused = JSONResponse({"error": f"origin {origin!r} is not allowed"}, status_code=403)
            await refused(scope, receive, send)
            return
        if not self.authorized(headers.get("authorization")):
            refused = JSONResponse(
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="tasktrail"'},
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``tasktrail mcp`` stops it itself, after
    which the manager closes (re-queueing running tasks)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_http(
    server: Server[Any], options: HttpOptions, stop: asyncio.Event, announce: Callable[[str], None]
) -> None:
    """Serve ``server`` over streamable HTTP until ``stop`` is set."""
    loopback = _is_loopback(options.host)
    # The Guard checks Host and Origin (before the token); the SDK's own check would refuse
    # the extra origins allowed here.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(
        streamable_http_path=ENDPOINT, transport_security=security, host=options.host
    )
    guarded = Guard(
        app, token=options.token, allowed_origins=options.allowed_origins, check_host=loopback
    )
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    shown = f"[{options.host}]" if ":" in options.host else options.host
    config = uvicorn.Config(
        guarded, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3
    )
    web = _Uvicorn(config)
    announce(f"serving http://{shown}:{port}{ENDPOINT}")
    announce(f"token: {options.token}  (send it as 'Authorization: Bearer <token>')")
    if not loopback:
        announce(f"warning: {options.host} is not a loopback address; use TLS in front of it")

    async def stopper() -> None:
        await stop.wait()
        web.should_exit = True

    watching = asyncio.create_task(stopper())
    try:
        await web.serve(sockets=[sock])
    finally:
        watching.cancel()
        sock.close()
