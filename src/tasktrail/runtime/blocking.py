"""``Client``: the :class:`~tasktrail.AsyncClient` as plain blocking calls.

For scripts, Django and Flask views, notebooks: code that has no event loop of its own. A
``Client`` runs one in a background thread and hands each call to it, so it is safe to
share between threads, and a call blocks only the thread that made it. It never runs
tasks: a worker does (``tasktrail worker``, or ``TaskManager.serve()``).

Called from inside a running event loop, every method raises
:class:`~tasktrail.EventLoopError` rather than stall that loop: use the async API there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from tasktrail.errors import EventLoopError, StoreClosedError
from tasktrail.runtime.client import AsyncClient

__all__ = ["Client"]

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    """The blocking form of an ``AsyncClient`` coroutine method (same docstring)."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(name, method(self._client, *args, **kwargs))

    return call


class Client:
    """Launch, inspect, wait for and cancel tasks with blocking calls (see the module doc).

    ``Client(database, **settings)`` takes :class:`~tasktrail.AsyncClient`'s settings. Use
    it as a context manager, or call :meth:`close`; a client left open is closed (with a
    ResourceWarning) when it is garbage collected.
    """

    def __init__(self, database: str | os.PathLike[str], **settings: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tasktrail-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._client = AsyncClient(database, **settings)
            self._call("open", self._client.__aenter__())
        except BaseException:
            self._stop_loop()
            self._closed = True
            raise

    def _call(self, name: str, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise EventLoopError(name)
        if self._closed:
            coroutine.close()
            raise StoreClosedError("client")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupt (Ctrl-C) while waiting: stop the call too
            raise

    def close(self) -> None:
        """Close the database and stop the client's thread. Closing twice is harmless."""
        if self._closed:
            return
        try:
            self._call("close", self._client.close())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_closed", True):
            _warn("tasktrail.Client was never closed", ResourceWarning, source=self)
            with contextlib.suppress(Exception, concurrent.futures.CancelledError):
                self.close()

    # The API, one blocking method per coroutine of AsyncClient.

    launch = _blocking(AsyncClient.launch)
    rerun = _blocking(AsyncClient.rerun)
    get_task = _blocking(AsyncClient.get_task)
    list_tasks = _blocking(AsyncClient.list_tasks)
    children = _blocking(AsyncClient.children)
    reruns = _blocking(AsyncClient.reruns)
    history = _blocking(AsyncClient.history)
    state_at = _blocking(AsyncClient.state_at)
    verify = _blocking(AsyncClient.verify)
    get_output = _blocking(AsyncClient.get_output)
    wait = _blocking(AsyncClient.wait)
    complete_task = _blocking(AsyncClient.complete_task)
    fail_task = _blocking(AsyncClient.fail_task)
    cancel = _blocking(AsyncClient.cancel)
    cancel_all = _blocking(AsyncClient.cancel_all)

    def run(
        self, agent: str, prompt: str = "", *, timeout: float | None = None, **options: Any
    ) -> Any:
        """Launch a task, wait for it, return its result (see ``AsyncClient.run``)."""
        return self._call("run", self._client.run(agent, prompt, timeout=timeout, **options))
