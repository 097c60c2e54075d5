"""Helpers of the dashboard's tests: real ``tasktrail ui`` and ``tasktrail worker``
processes, tasks launched from this process, screenshots for the docs.

Every wait is on a condition with a generous deadline: Playwright's ``expect`` assertions
retry until they hold, and :func:`until` polls anything else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Page, expect

from tasktrail import AsyncClient, RecordedEvent, Task, open_store

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(
    os.environ.get("TASKTRAIL_UI_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / "tasktrail-ui-screenshots"
)
"""Where the tests write their screenshots (look at them after a run). The docs show the
ones in docs/img: refresh those with ``TASKTRAIL_UI_SCREENSHOTS=docs/img pytest tests/ui``,
so that a test run never rewrites files of the repository by itself."""
DEADLINE = 30.0
"""Seconds any condition may take to hold on a loaded 2-core machine."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
WORKER_CONFIG = """
[worker]
poll_interval = 0.1
cancel_grace = 2.0
lease_timeout = 5.0
retry_backoff = 0.3
"""

expect.set_options(timeout=DEADLINE * 1000)


def until(condition: Callable[[], T], what: str, deadline: float = DEADLINE) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``deadline``."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn`` in a thread of its own (Playwright's sync API owns this thread's event
    loop, so nothing here may start another)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end, in a thread of its own."""
    return in_thread(asyncio.run, coroutine)


def environment() -> dict[str, str]:
    """The environment of the processes the tests start (no asyncio debug: it slows them)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


@dataclass
class Process:
    """A long-running tasktrail command, its output in files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal it and wait for it to end; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.process.args} did not stop; stderr: {self.stderr()}"
            ) from None


@dataclass
class Ui(Process):
    """A running ``tasktrail ui``."""

    url: str = ""
    token: str | None = None

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        """GET ``path``: (status, body)."""
        return self.request("GET", path, None, headers)

    def post(self, path: str, form: dict[str, str], **headers: str) -> tuple[int, str]:
        """POST a form to ``path``: (status, body). Redirects are not followed."""
        body = urllib.parse.urlencode(form).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return self.request("POST", path, body, headers)

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=body,
            method=method,
            headers={k.replace("_", "-"): v for k, v in headers.items()},
        )
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            with opener.open(request, timeout=DEADLINE) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Processes:
    """Starts ``tasktrail ui`` and ``tasktrail worker`` processes; ends them all after the
    test."""

    directory: Path
    started: list[Process] = field(default_factory=list)

    def _start(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        index = len(self.started)
        out = self.directory / f"{name}-{index}.out"
        err = self.directory / f"{name}-{index}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "tasktrail", *args],
                stdout=stdout, stderr=stderr, env=environment(), cwd=self.directory,
            )  # fmt: skip
        return process, out, err

    def ui(self, database: str, *args: str) -> Ui:
        """Start ``tasktrail ui`` on a free port; return once it listens."""
        process, out, err = self._start("ui", "ui", "--db", database, "--port", "0", *args)
        ui = Ui(process, out, err)
        self.started.append(ui)

        def announced() -> re.Match[str] | None:
            if process.poll() is not None:
                raise AssertionError(f"tasktrail ui exited: {ui.stderr()}")
            return re.search(r" at (http://\S+/)\n", ui.stdout())

        ui.url = until(announced, "tasktrail ui to print its URL")[1]
        if "--allow-actions" in args:
            ui.token = until(lambda: re.search(r"\?token=(\S+) ", ui.stdout()), "the token line")[1]
        return ui

    def worker(self, database: str, *args: str) -> Process:
        """Start ``tasktrail worker`` with fast polling."""
        config = self.directory / "tasktrail.toml"
        config.write_text(WORKER_CONFIG)
        process, out, err = self._start(
            "worker", "worker", "--db", database, "--config", str(config), *args
        )
        worker = Process(process, out, err)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for started in self.started:
            if started.process.poll() is None:
                started.process.send_signal(signal.SIGTERM)
        for started in self.started:
            try:
                started.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                started.process.kill()
                started.process.wait()


def screenshot(page: Page, name: str, *, full_page: bool = False, around: str = "") -> Path:
    """Write a screenshot of ``page`` where the docs find it (``docs/img/ui-NAME.png``):
    the viewport, the whole page, or the elements matching ``around`` (with a margin)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"ui-{name}.png"
    clip = None
    if around:
        boxes = [box for box in (e.bounding_box() for e in page.locator(around).all()) if box]
        assert boxes, f"nothing matches {around!r}"
        scroll = page.evaluate("[window.scrollX, window.scrollY]")
        left = min(b["x"] for b in boxes) + scroll[0] - 12
        top = min(b["y"] for b in boxes) + scroll[1] - 12
        right = max(b["x"] + b["width"] for b in boxes) + scroll[0] + 12
        bottom = max(b["y"] + b["height"] for b in boxes) + scroll[1] + 12
        clip = {"x": max(0, left), "y": max(0, top), "width": right - left, "height": bottom - top}
        full_page = True
    page.screenshot(path=path, full_page=full_page, clip=clip, animations="disabled")
    return path


def launch(database: str, agent: str, prompt: str, **options: Any) -> str:
    """Launch a task from this process (not the dashboard's); its id (12 hex digits, as
    ``tasktrail submit`` makes them, unless ``task_id`` is given)."""
    options.setdefault("task_id", uuid.uuid4().hex[:12])

    async def go() -> str:
        async with AsyncClient(database) as client:
            return (await client.launch(agent, prompt, **options)).id

    return run(go())


def task(database: str, task_id: str) -> Task:
    """The task as the store holds it now."""

    async def go() -> Task | None:
        async with open_store(database) as store:
            return await store.get_task(task_id)

    found = run(go())
    assert found is not None, task_id
    return found


def history(database: str, task_id: str) -> list[RecordedEvent]:
    """Every event of a task."""

    async def go() -> list[RecordedEvent]:
        async with open_store(database) as store:
            return await store.history(task_id)

    return run(go())


def head(database: str) -> int:
    """The log's last sequence number."""

    async def go() -> int:
        async with open_store(database) as store:
            return await store.head()

    return run(go())


def task_url(ui: Ui, task_id: str) -> str:
    """The URL of a task's page."""
    return f"{ui.url}tasks/{urllib.parse.quote(task_id, safe='')}"


def origin(ui: Ui) -> str:
    """The dashboard's origin, as a browser sends it."""
    return ui.url.rstrip("/")
