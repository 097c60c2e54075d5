"""Serving a dashboard with uvicorn until asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

from tasktrail.errors import InvalidInputError
from tasktrail.ui._app import create_app, is_loopback
from tasktrail.ui._dashboard import Dashboard, Settings

__all__ = ["Announcement", "bind", "serve"]

Announcement = Callable[[str, "str | None", Dashboard], None]
"""Called once the dashboard listens: (its URL, its actions' token or None, the dashboard)."""


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the command handles the signals
    (uvicorn would re-raise a SIGTERM after serving, ending the process without its
    goodbye)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {err}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        hint = "; choose another with --port" if "in use" in str(err) else ""
        raise InvalidInputError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from err
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    """The URL a browser on this machine opens for ``sock``."""
    port = sock.getsockname()[1]
    shown = host
    if host in ("0.0.0.0", "", "::"):
        shown = "127.0.0.1"
    elif ":" in host:
        shown = f"[{host}]"
    return f"http://{shown}:{port}/"


async def serve(
    settings: Settings, *, host: str, port: int, stop: asyncio.Event, announce: Announcement
) -> None:
    """Serve the dashboard on ``host:port`` until ``stop`` is set."""
    sock = bind(host, port)
    try:
        async with Dashboard(settings) as dash:
            app = create_app(dash, loopback_only=is_loopback(host))
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
            server = _Server(config)

            async def stopping() -> None:
                await stop.wait()
                dash.hub.close()  # ends the live streams, so connections can close
                server.should_exit = True

            watcher = asyncio.create_task(stopping())
            try:
                announce(url_of(sock, host), dash.actions.token, dash)
                await server.serve(sockets=[sock])
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    finally:
        sock.close()
