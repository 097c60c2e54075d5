"""Every page of the dashboard on a log with every kind of story, written as the
screenshots the docs show (to a temporary folder; ``TASKTRAIL_UI_SCREENSHOTS=docs/img``
refreshes the docs' own)."""

from __future__ import annotations

import signal
from pathlib import Path

from browsing import Processes, history, launch, run, screenshot, task, task_url, until
from playwright.sync_api import Page, expect

from tasktrail import AsyncClient


def cancel(database: str, task_id: str) -> None:
    """Cancel a task from this process."""

    async def go() -> None:
        async with AsyncClient(database) as client:
            await client.cancel(task_id)

    run(go())


def test_screenshots_of_every_page(
    db_path: Path, tmp_path: Path, processes: Processes, page: Page
) -> None:
    """A worker killed with SIGKILL and recovered, a retried task, a failure, a cancel, a
    parent and its children, running and queued tasks: each page shows them (and is
    photographed for the docs)."""
    db = str(db_path)
    gate = tmp_path / "gate"

    def wait_for(path: Path) -> str:
        return f"while [ ! -e {path} ]; do sleep 0.05; done"

    recovered = launch(
        db, "shell", f"echo 'indexing 1200 files'; {wait_for(gate)}; echo 'index written'",
        description="index the repository", max_attempts=2,
    )  # fmt: skip
    first = processes.worker(db, "--id", "worker-a")
    until(lambda: task(db, recovered).state == "running", "the first attempt to run")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    gate.touch()

    flaky = launch(
        db, "shell",
        'echo "fetching the changelog (attempt $TASKTRAIL_ATTEMPT)"\n'
        '[ "$TASKTRAIL_ATTEMPT" -ge 3 ] || { echo "503 from the API" >&2; exit 1; }\n'
        'echo "42 entries"',
        description="fetch the changelog", max_attempts=3,
    )  # fmt: skip
    build = launch(
        db, "shell", "echo compiling; sleep 0.3; echo linking; sleep 0.2; echo done",
        description="build the release",
    )  # fmt: skip
    complaint = "echo 'src/app.py:12: missing return type' >&2"
    lint = launch(db, "shell", f"echo checking 214 files; {complaint}; exit 2", description="lint")
    parent = launch(db, "shell", f"echo 'waiting for the checks'; {wait_for(tmp_path / 'never')}",
                    description="release pipeline")  # fmt: skip
    children = [
        launch(db, "shell", f"echo {name} ok", description=name, parent_id=parent)
        for name in ("unit tests", "docs build")
    ]
    doomed = launch(db, "shell", "echo 'uploading'; sleep 60", description="upload the artefacts")
    watch = launch(db, "shell", f"echo 'tailing the deploy log'; {wait_for(tmp_path / 'never')}",
                   description="watch the deploy")  # fmt: skip
    assert task(db, watch).state == "pending"
    queued = launch(db, "claude", "Summarise the release notes for the announcement",
                    description="write the announcement")  # fmt: skip
    processes.worker(db, "--id", "worker-b", "--concurrency", "8", "--agent", "shell")
    until(lambda: task(db, doomed).state == "running", "the upload to run")
    cancel(db, doomed)
    finished = {recovered: "completed", flaky: "completed", build: "completed", lint: "failed",
                doomed: "cancelled", **dict.fromkeys(children, "completed")}  # fmt: skip
    for task_id, state in finished.items():
        until(lambda t=task_id, s=state: task(db, t).state == s, f"{task_id} to be {state}")
    assert task(db, recovered).attempt == 2
    assert task(db, flaky).attempt == 3
    assert task(db, parent).state == "running"
    assert task(db, queued).state == "pending"

    ui = processes.ui(db_path.name)  # relative to the processes' directory: a short label
    page.goto(ui.url)
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("#tasks tbody tr")).to_have_count(10)
    expect(page.locator('#counts [data-count="completed"]')).to_have_text("5")
    screenshot(page, "tasks")

    page.goto(task_url(ui, flaky))
    expect(page.locator("#timeline text.lane-label")).to_have_text(
        ["queue", "attempt 1", "attempt 2", "attempt 3"]
    )
    expect(page.locator("#timeline rect.backoff")).to_have_count(2)
    screenshot(page, "task", full_page=True)

    page.goto(task_url(ui, recovered))
    expect(page.locator("#timeline .mark.recovery")).to_have_count(1)
    expect(page.locator("#task-reason")).to_be_hidden()
    requeued = next(e for e in history(db, recovered) if e.type == "task.requeued")
    page.locator("#replay").fill(str(requeued.version))
    expect(page.locator("#replay-event")).to_contain_text("recovery")
    expect(page.locator("#replay-state")).to_have_text("pending")
    page.locator("#replay").blur()
    screenshot(page, "replay", around="#timeline-panel, #replay-panel")

    page.goto(task_url(ui, parent))
    expect(page.locator(".children .child")).to_have_count(2)
    expect(page.locator("#timeline .mark.child")).to_have_count(2)
    expect(page.locator("#task-state")).to_have_text("running")

    page.goto(ui.url + "workers")
    expect(page.locator("#workers tbody tr")).to_have_count(2)
    expect(page.locator('#workers tr[data-id="worker-b"] .badge')).to_have_text("alive")
    expect(page.locator('#workers tr[data-id="worker-a"] .badge')).to_have_text("dead")
    expect(page.locator("#chart rect")).not_to_have_count(0)
    screenshot(page, "workers")

    page.goto(ui.url + "verify")
    page.locator("#verify-button").click()
    expect(page.locator("#verify-result")).to_have_attribute("data-ok", "yes")
    screenshot(page, "verify")
