"""``tasktrail ui`` as a process: starting, refusing, stopping, and its HTTP answers."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from browsing import DEADLINE, Processes, Ui, environment, head, launch, run, until

from tasktrail import NewEvent, SQLiteEventStore, TaskCreated

WITHOUT_THE_EXTRA = """
import sys
for name in ("starlette", "uvicorn", "jinja2"):
    sys.modules[name] = None  # as if the ui extra were not installed
from tasktrail.cli import main
main(["ui", "--db", sys.argv[1]])
"""

IMPORTS = """
import sys
import tasktrail, tasktrail.cli
from tasktrail.cli import main
loaded = sorted(n for n in ("starlette", "uvicorn", "jinja2", "tasktrail.ui") if n in sys.modules)
print(",".join(loaded))
"""


def tasktrail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a tasktrail command to its end."""
    return subprocess.run(
        [sys.executable, "-m", "tasktrail", *args],
        capture_output=True, text=True, timeout=DEADLINE, cwd=cwd, env=environment(), check=False,
    )  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A database holding one pending task, ``t1``."""
    path = tmp_path / "tasks.db"
    launch(str(path), "shell", "echo one", task_id="t1")
    return str(path)


def test_without_the_extra_the_command_names_it(db: str, tmp_path: Path) -> None:
    """Without Starlette, uvicorn and Jinja2, `tasktrail ui` says in one line what to
    install, without a traceback."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA, db],
        capture_output=True, text=True, cwd=tmp_path, timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "pip install 'tasktrail[ui]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_importing_tasktrail_loads_nothing_of_the_dashboard(tmp_path: Path) -> None:
    """`import tasktrail` and the command line import neither the dashboard nor its
    packages."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS], capture_output=True, text=True, cwd=tmp_path,
        timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_help_lists_the_command(tmp_path: Path) -> None:
    """`tasktrail --help` lists `ui`; `tasktrail ui --help` shows its options."""
    assert " ui " in tasktrail("--help", cwd=tmp_path).stdout
    shown = tasktrail("ui", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    for option in ("--host", "--port", "--allow-actions", "--open"):
        assert option in shown.stdout


def test_a_missing_database_or_a_busy_port_is_one_line(db: str, tmp_path: Path) -> None:
    """No database, or a port another process holds: one line on stderr, no traceback."""
    missing = tasktrail("ui", "--db", str(tmp_path / "nope.db"), cwd=tmp_path)
    assert missing.returncode == 9
    assert "no database at" in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = tasktrail("ui", "--db", db, "--port", str(port), cwd=tmp_path)
    assert busy.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1


def read_events(ui: Ui, query: str, wanted: int, found: list[tuple[str, str]]) -> None:
    """Read SSE messages (name, data) from ``/stream?query`` into ``found`` until
    ``wanted`` arrived or the stream ends."""
    with urllib.request.urlopen(f"{ui.url}stream?{query}", timeout=DEADLINE) as stream:
        name = ""
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                found.append((name, line[6:]))
                if len(found) >= wanted:
                    return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_cleanly_with_a_stream_open(
    db: str, processes: Processes, sig: signal.Signals
) -> None:
    """SIGTERM or Ctrl-C ends the dashboard with exit code 0, even while a page follows
    the live stream; the page is told goodbye."""
    ui = processes.ui(db)
    found: list[tuple[str, str]] = []
    reader = threading.Thread(target=read_events, args=(ui, "after=0", 99, found))
    reader.start()
    until(lambda: ("ready", "{}") in found, "the stream to be ready")
    assert ui.stop(sig) == 0
    reader.join(DEADLINE)
    assert not reader.is_alive()
    assert found[-1][0] == "bye"
    assert "tasktrail ui stopped" in ui.stdout()


def test_a_late_page_catches_up_from_its_position(db: str, processes: Processes) -> None:
    """A stream opened with ``after`` receives what happened since, before it is ready;
    then each new task as it comes, and the counts per state."""
    ui = processes.ui(db)
    found: list[tuple[str, str]] = []
    reader = threading.Thread(target=read_events, args=(ui, "after=0", 99, found), daemon=True)
    reader.start()
    until(lambda: len(found) >= 2, "the catch-up and the ready message")
    name, data = found[0]
    assert name == "tasks"
    assert [row["id"] for row in json.loads(data)["tasks"]] == ["t1"]
    assert found[1][0] == "ready"
    launch(db, "shell", "echo two", task_id="t2")

    def messages() -> list[dict[str, Any]]:
        return [json.loads(data) for name, data in found[2:] if name == "tasks"]

    rows = until(
        lambda: [row for m in messages() for row in m["tasks"]],
        "the new task",
    )
    assert [(r["id"], r["state"], r["match"]) for r in rows] == [("t2", "pending", True)]
    counts = until(lambda: [m["counts"] for m in messages() if m["counts"]], "the counts after it")
    assert counts[-1]["pending"] == 2
    ui.stop()


def test_http_answers(db: str, processes: Processes) -> None:
    """Unknown tasks are 404, bad input 400, another Host name 400; every page carries a
    content security policy; the raw output and the replay API answer."""
    ui = processes.ui(db)
    status, body = ui.get("/tasks/nope")
    assert status == 404
    assert "no task with id" in body
    assert ui.get("/?before=garbage")[0] == 400
    assert ui.get("/?state=sleeping")[0] == 400
    assert ui.get("/api/replay/t1?version=9")[0] == 400
    status, body = ui.get("/api/replay/t1?version=1")
    assert status == 200
    assert json.loads(body)["state"] == "pending"
    assert ui.get("/log/999")[0] == 404
    status, body = ui.get("/", Host="attacker.example")
    assert status == 400  # a DNS-rebinding page cannot read the dashboard
    with urllib.request.urlopen(ui.url, timeout=DEADLINE) as response:
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert ui.get("/output/t1") == (200, "")


def test_verify_runs_only_from_the_dashboards_own_pages(db: str, processes: Processes) -> None:
    """A POST to /verify from another origin is refused; the page's own runs it."""
    ui = processes.ui(db)
    assert ui.post("/verify", {}, Origin="http://evil.example")[0] == 403
    status, body = ui.post("/verify", {}, Origin=ui.url.rstrip("/"))
    assert status == 200
    assert "The chain is intact" in body
    assert head(db) == 1


async def _rerun_pair(path: str) -> None:
    """A task with an input, and a rerun of it (as ``rerun()`` records one)."""
    async with SQLiteEventStore(path) as store:
        first = TaskCreated(agent="shell", prompt="sum", input={"numbers": [1, 2, 3]})
        await store.append("original", [NewEvent(first)], expected_version=0)
        again = TaskCreated(agent="shell", prompt="sum", rerun_of="original")
        await store.append("again", [NewEvent(again, actor="ui")], expected_version=0)


def test_a_task_page_shows_its_input_its_reruns_and_what_it_reruns(
    tmp_path: Path, processes: Processes
) -> None:
    """The original's page shows its input and links to its rerun; the rerun's page links
    back to the original."""
    db = str(tmp_path / "reruns.db")
    run(_rerun_pair(db))
    ui = processes.ui(db)
    status, page = ui.get("/tasks/original")
    assert status == 200
    assert '{"numbers": [1, 2, 3]}' in page.replace("&#34;", '"')
    assert 'href="/tasks/again"' in page
    status, page = ui.get("/tasks/again")
    assert status == 200
    assert 'href="/tasks/original"' in page
