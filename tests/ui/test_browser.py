"""The dashboard in a real browser, against a real ``tasktrail ui`` and a real worker."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from browsing import Processes, head, history, launch, origin, run, screenshot, task, task_url
from playwright.sync_api import Page, expect

from tasktrail import (
    NewEvent,
    OutputAppended,
    SQLiteEventStore,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
)

HOSTILE = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


def wait_live(page: Page) -> None:
    """Wait until the page's live stream is connected."""
    expect(page.locator("#live")).to_have_attribute("data-state", "live")


def test_a_task_launched_elsewhere_appears_live_and_changes_state(
    any_database: str, processes: Processes, page: Page
) -> None:
    """A task launched by another process shows up in the open list without a reload, and
    its state and the counts change as a worker process runs it (SQLite and PostgreSQL)."""
    database = any_database
    launch(database, "shell", "echo first", description="already there")
    ui = processes.ui(database)
    page.goto(ui.url)
    wait_live(page)
    page.evaluate("window.__same_page = true")
    task_id = launch(database, "shell", "echo from another process", description="launched later")
    row = page.locator(f'#tasks tr[data-id="{task_id}"]')
    expect(row.locator(".badge")).to_have_text("pending")
    expect(row.locator("td.title")).to_have_text("launched later")
    expect(page.locator("#tasks tbody tr").first).to_have_attribute("data-id", task_id)
    expect(page.locator('#counts [data-count="pending"]')).to_have_text("2")
    processes.worker(database, "--id", "w-live")
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row.locator("td.worker")).to_have_text("w-live")
    expect(page.locator('#counts [data-count="completed"]')).to_have_text("2")
    expect(page.locator('#counts [data-count="pending"]')).to_have_text("0")
    assert page.evaluate("window.__same_page") is True  # no reload happened


def test_task_page_shows_timeline_events_replay_and_follows_output(
    any_database: str, tmp_path: Path, processes: Processes, page: Page
) -> None:
    """A task's page, open before the task starts: its state, output, timeline and events
    follow live; the replay slider shows the state after each version (SQLite and
    PostgreSQL); verify runs on the same database."""
    db = any_database
    gate = tmp_path / "gate"
    script = f"echo first line; while [ ! -e {gate} ]; do sleep 0.05; done; echo second line"
    task_id = launch(db, "shell", script, description="follow me")
    ui = processes.ui(db)
    page.goto(task_url(ui, task_id))
    wait_live(page)
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#timeline rect.pending")).to_have_count(1)
    processes.worker(db, "--id", "w-page")
    expect(page.locator("#task-state")).to_have_text("running")
    expect(page.locator("#output")).to_have_text("first line\n")
    expect(page.locator("#fact-worker")).to_have_text("w-page")
    expect(page.locator("#timeline rect.running.open")).to_have_count(1)
    expect(page.locator("#timeline text.lane-label")).to_have_text(["queue", "attempt 1"])
    gate.touch()
    expect(page.locator("#task-state")).to_have_text("completed")
    expect(page.locator("#output")).to_have_text("first line\nsecond line\n")
    expect(page.locator("#timeline rect.running.open")).to_have_count(0)
    expect(page.locator("#timeline rect.running")).to_have_count(1)
    expect(page.locator("#timeline .mark.completed")).to_have_count(1)
    events = history(db, task_id)
    expect(page.locator("#events tbody tr")).to_have_count(len(events))
    expect(page.locator("#events tbody tr").last).to_contain_text("completed")

    slider = page.locator("#replay")
    expect(slider).to_have_attribute("max", str(len(events)))
    slider.fill("1")
    expect(page.locator("#replay-state")).to_have_text("pending")
    expect(page.locator("#replay-event")).to_contain_text("created by user")
    expect(page.locator('#replay-fields [data-field="state"] dd')).to_have_text("pending")
    page.locator("#replay-next").click()
    expect(page.locator("#replay-state")).to_have_text("starting")
    expect(page.locator('#replay-fields [data-field="worker_id"]')).to_have_class("changed")
    slider.fill(str(len(events)))
    expect(page.locator("#replay-state")).to_have_text("completed")
    page.goto(ui.url + "verify")
    page.locator("#verify-button").click()
    expect(page.locator("#verify-result")).to_have_attribute("data-ok", "yes")
    expect(page.locator("#head-hash")).to_have_text(events[-1].hash)


async def _small_log(path: Path) -> str:
    """A completed task with one line of output, appended through the store."""
    async with SQLiteEventStore(path) as store:
        steps = [
            TaskCreated(agent="shell", prompt="echo the sum"),
            TaskClaimed(worker_id="w1", attempt=1),
            TaskStarted(),
            OutputAppended(text="the sum is 42\n"),
            TaskCompleted(result=42),
        ]
        for version, payload in enumerate(steps):
            await store.append("summing", [NewEvent(payload, actor="w1")], expected_version=version)
    return "summing"


def test_verify_on_a_good_log_and_on_a_copy_with_one_byte_changed(
    db_path: Path, tmp_path: Path, processes: Processes, page: Page
) -> None:
    """Verify from the page: the good log is intact; in a copy with one byte of an event
    changed, the page names the first bad sequence number and links to its event."""
    task_id = run(_small_log(db_path))
    ui = processes.ui(db_path.name)  # relative to the processes' directory: a short label
    page.goto(ui.url + "verify")
    page.locator("#verify-button").click()
    expect(page.locator("#verify-result")).to_have_attribute("data-ok", "yes")
    expect(page.locator("#verify-result")).to_contain_text("The chain is intact")
    expect(page.locator("#verify-result")).to_contain_text("matches the log")

    copy = tmp_path / "copy.db"
    with (
        contextlib.closing(sqlite3.connect(db_path)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    raw = copy.read_bytes()
    assert raw.count(b"the sum is 42") == 1
    copy.write_bytes(raw.replace(b"the sum is 42", b"the sum is 43"))
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{copy}{suffix}").exists()

    tampered = processes.ui(copy.name)
    page.goto(tampered.url + "verify")
    page.locator("#verify-button").click()
    expect(page.locator("#verify-result")).to_have_attribute("data-ok", "no")
    expect(page.locator("#bad-event")).to_have_text("sequence #4")
    screenshot(page, "verify-tampered")
    page.locator("#bad-event").click()
    expect(page).to_have_url(task_url(tampered, task_id) + "#event-4")
    expect(page.locator("#event-4")).to_contain_text("the sum is 43")


def test_hostile_text_from_the_log_shows_as_text(
    db_path: Path, processes: Processes, page: Page
) -> None:
    """A prompt, description, output and error holding markup show as text, on the list
    and the task page, rendered by the server or added live: no script runs."""
    db = str(db_path)
    launch(db, "shell", "true")
    ui = processes.ui(db)
    page.goto(ui.url)
    wait_live(page)
    prompt = f"cat <<'EOF'\n{HOSTILE}\nEOF\nexit 7"
    task_id = launch(db, "shell", prompt, description=HOSTILE, metadata={"note": HOSTILE})
    row = page.locator(f'#tasks tr[data-id="{task_id}"]')
    expect(row.locator("td.title")).to_have_text(HOSTILE)  # added live by the script
    page.goto(task_url(ui, task_id))
    wait_live(page)
    processes.worker(db, "--id", "w-hostile")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#output")).to_have_text(HOSTILE + "\n")  # arrived live
    expect(page.locator("#task-error")).to_contain_text(HOSTILE)
    page.reload()  # now all of it rendered by the server
    expect(page.locator("#task-title")).to_have_text(HOSTILE)
    expect(page.locator("#prompt")).to_have_text(prompt)
    expect(page.locator("#output")).to_have_text(HOSTILE + "\n")
    metadata = json.dumps({"note": HOSTILE}, ensure_ascii=False)
    expect(page.locator('#replay-fields [data-field="metadata"] dd')).to_have_text(metadata)
    page.goto(ui.url)
    expect(row.locator("td.title")).to_have_text(HOSTILE)
    assert page.locator("main img, main script:not([type='application/json'])").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert task(db, task_id).state == "failed"


def test_without_actions_there_is_no_button_and_the_endpoint_refuses(
    db_path: Path, processes: Processes, page: Page
) -> None:
    """A dashboard started without --allow-actions shows no action and refuses one with
    403, writing nothing."""
    db = str(db_path)
    task_id = launch(db, "shell", "sleep 60")
    ui = processes.ui(db)
    page.goto(task_url(ui, task_id))
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#actions")).to_have_count(0)
    expect(page.locator("button", has_text="Cancel")).to_have_count(0)
    before = head(db)
    status, body = ui.post(
        f"/actions/cancel/{task_id}", {"reason": "try anyway", "token": "guess"}, Origin=origin(ui)
    )
    assert status == 403
    assert "actions are off" in body
    assert head(db) == before
    assert task(db, task_id).state == "pending"


def test_actions_need_the_token_and_the_dashboards_own_origin(
    db_path: Path, processes: Processes
) -> None:
    """With actions on, a POST without the token, with a wrong one, or from another
    origin is refused with 403 and writes nothing."""
    db = str(db_path)
    task_id = launch(db, "shell", "sleep 60")
    ui = processes.ui(db, "--allow-actions")
    assert ui.token
    before = head(db)
    path = f"/actions/cancel/{task_id}"
    refused = [
        ui.post(path, {"reason": "no token"}, Origin=origin(ui)),
        ui.post(path, {"reason": "wrong token", "token": "x" + ui.token}, Origin=origin(ui)),
        ui.post(path, {"reason": "elsewhere", "token": ui.token}, Origin="http://evil.example"),
        ui.post(path, {"reason": "no origin", "token": ui.token}),
        ui.post(
            path, {"reason": "cross site", "token": ui.token},
            Origin=origin(ui), Sec_Fetch_Site="cross-site",
        ),
    ]  # fmt: skip
    assert [status for status, _ in refused] == [403] * len(refused)
    assert "token" in refused[0][1]
    assert "did not come from this dashboard" in refused[2][1]
    assert head(db) == before
    assert task(db, task_id).state == "pending"


def test_cancel_from_the_page_is_recorded_with_actor_ui_and_the_reason(
    db_path: Path, tmp_path: Path, processes: Processes, page: Page
) -> None:
    """Opened with the printed token URL, the page cancels a running task: the request
    and the cancel are in the history with actor ``ui`` and the reason typed."""
    db = str(db_path)
    gate = tmp_path / "never"
    task_id = launch(db, "shell", f"while [ ! -e {gate} ]; do sleep 0.05; done")
    processes.worker(db, "--id", "w-cancel")
    ui = processes.ui(db, "--allow-actions")
    page.goto(f"{ui.url}?token={ui.token}")  # the URL it printed
    expect(page).to_have_url(ui.url)  # the token moved into a cookie
    page.goto(task_url(ui, task_id))
    expect(page.locator("#task-state")).to_have_text("running")
    expect(page.locator('input[name="token"]')).to_have_count(0)
    page.locator('input[name="reason"]').fill("<b>stuck</b> on the gate")
    page.locator("#action-cancel").click()
    expect(page.locator("#done")).to_contain_text("Cancel requested")
    expect(page.locator("#task-state")).to_have_text("cancelled")
    steps = [(e.type, e.actor, e.reason) for e in history(db, task_id)]
    assert ("task.cancel_requested", "ui", "<b>stuck</b> on the gate") in steps
    expect(page.locator("#events")).to_contain_text("<b>stuck</b> on the gate")


def test_the_token_can_be_typed_in_the_page(
    db_path: Path, processes: Processes, page: Page
) -> None:
    """Without the token cookie the form asks for the token; the right one acts, a wrong
    one is refused and writes nothing."""
    db = str(db_path)
    task_id = launch(db, "shell", "sleep 60")
    ui = processes.ui(db, "--allow-actions")
    assert ui.token
    page.goto(task_url(ui, task_id))
    before = head(db)
    page.locator('input[name="reason"]').fill("wrong token")
    page.locator('input[name="token"]').fill("not-the-token")
    page.locator("#action-cancel").click()
    expect(page.locator("#error-message")).to_contain_text("token")
    assert head(db) == before
    page.goto(task_url(ui, task_id))
    page.locator('input[name="reason"]').fill("not needed any more")
    page.locator('input[name="token"]').fill(ui.token)
    page.locator("#action-cancel").click()
    expect(page.locator("#task-state")).to_have_text("cancelled")  # pending: at once
    assert task(db, task_id).state == "cancelled"


def test_rerun_from_the_page_launches_a_linked_copy(
    db_path: Path, processes: Processes, page: Page
) -> None:
    """Rerun on a finished task's page launches a copy linked to it, recorded by actor
    ``ui`` with the reason; the copy's page links back."""
    db = str(db_path)
    original = launch(db, "shell", "echo again", description="run me twice")
    processes.worker(db, "--id", "w-rerun")
    ui = processes.ui(db, "--allow-actions")
    page.goto(f"{ui.url}?token={ui.token}")
    page.goto(task_url(ui, original))
    expect(page.locator("#task-state")).to_have_text("completed")
    page.locator('input[name="reason"]').fill("the flaky network is fixed")
    page.locator("#action-rerun").click()
    expect(page.locator("#done")).to_contain_text("Rerun launched")
    expect(page.locator(f'a[href="/tasks/{original}"]')).to_have_count(1)
    expect(page.locator("#task-state")).to_have_text("completed")
    copy = page.url.split("/tasks/")[1].split("?")[0]
    assert copy != original
    assert task(db, copy).rerun_of == original
    created = history(db, copy)[0]
    assert (created.actor, created.reason) == ("ui", "the flaky network is fixed")
