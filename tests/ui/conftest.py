"""Fixtures of the dashboard's tests: real ``tasktrail ui`` and ``tasktrail worker``
processes, and a Chromium driven by Playwright (the system's Chromium: ``apt-get install -y
chromium``; Playwright's own browser download is not used).

One browser per test module, not per session: between two calls, Playwright's sync API
marks its event loop as running in this thread, so while it lives no ``asyncio.run`` (and
no async test) can run here. Launching it takes a few tenths of a second; the helpers run
their own asyncio work in a thread of its own (``browsing.run``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browsing import CHROMIUM_ARGS, Processes, in_thread
from playwright.sync_api import Browser, Page, sync_playwright

from pgserver import Databases


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start dashboards and workers; all of them are stopped after the test."""
    started = Processes(tmp_path)
    yield started
    started.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the test module: the system's (Debian's ``chromium``)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "the browser tests drive the system's Chromium, which is not installed: "
            "apt-get install -y chromium",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser page (its own cookies), 1280 x 860; script errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"script errors in the page: {errors}"


@pytest.fixture
def any_database(databases: Databases) -> str:
    """A new database of each backend (as the root ``database`` fixture, made in a thread)."""
    return in_thread(databases.new)
