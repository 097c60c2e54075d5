"""SubprocessRunner under a real TaskManager: streaming, exit codes, process-group cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tasktrail import InvalidInputError, OutputAppended, RunContext, Task, TaskManager, TaskState
from tasktrail.events import Event
from tasktrail.runtime.clock import SystemClock
from tasktrail.runtime.subprocess import SubprocessRunner

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/stat"), reason="inspects process groups through /proc"
)

TIMEOUT = 15.0


@asynccontextmanager
async def manager(db_path: str, **settings: Any) -> AsyncIterator[TaskManager]:
    """A manager polling every 50 ms with the built-in shell agent registered as ``sh``."""
    settings.setdefault("poll_interval", 0.05)
    async with TaskManager(db_path, **settings) as tm:
        tm.register("sh", SubprocessRunner.shell())
        yield tm


def group_members(pgid: int) -> dict[int, str]:
    """Every process of group ``pgid`` (zombies included), pid -> state letter."""
    members = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid:
            members[int(name)] = fields[0].decode()
    return members


def running_members(pgid: int) -> dict[int, str]:
    """The processes of group ``pgid`` that are not zombies."""
    return {pid: s for pid, s in group_members(pgid).items() if s not in ("Z", "X")}


async def until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Return once ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def started_group(tm: TaskManager, task_id: str, members: int = 1) -> int:
    """Wait until the task runs with at least ``members`` live processes; its group id."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        task = await tm.get_task(task_id)
        assert task is not None
        if task.state is TaskState.RUNNING and (task.session_id or "").startswith("pid:"):
            pgid = int(task.session_id.removeprefix("pid:"))  # type: ignore[union-attr]
            if len(running_members(pgid)) >= members:
                return pgid
        assert time.monotonic() < deadline, f"task {task_id} did not start: {task}"
        await asyncio.sleep(0.02)


def assert_reaped(pid: int) -> None:
    """The process is gone: no /proc entry (not even a zombie), and not our child."""
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups a test started; whatever is left of them is killed afterwards."""
    started: list[int] = []
    yield started
    for pgid in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


async def test_stdout_and_stderr_are_recorded_on_their_channels(db_path: str) -> None:
    """Both streams end up in the output, each event tagged with its channel."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", "echo out; echo err >&2")
        done = await tm.wait(task.id, timeout=TIMEOUT)
        history = await tm.history(task.id)
    assert done.state is TaskState.COMPLETED
    assert done.result == {"exit_code": 0}
    by_channel: dict[str, str] = {}
    for event in history:
        if isinstance(event.payload, OutputAppended):
            channel = event.payload.channel
            by_channel[channel] = by_channel.get(channel, "") + event.payload.text
    assert by_channel == {"stdout": "out\n", "stderr": "err\n"}


async def test_output_is_streamed_while_the_process_runs(db_path: str, groups: list[int]) -> None:
    """Output written early is readable before the process ends."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", "echo first; sleep 30")
        groups.append(await started_group(tm, task.id))
        deadline = time.monotonic() + TIMEOUT
        while "first" not in await tm.get_output(task.id):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        running = await tm.get_task(task.id)
        await tm.cancel(task.id, force=True)
    assert running is not None and running.state is TaskState.RUNNING


async def test_started_records_the_pid_as_session_id(db_path: str) -> None:
    """The start event carries ``pid:<pid>`` of the process, which is reaped afterwards."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", "echo $$")
        done = await tm.wait(task.id, timeout=TIMEOUT)
        output = await tm.get_output(task.id)
    assert done.session_id == f"pid:{output.strip()}"
    assert_reaped(int(output))


async def test_non_zero_exit_fails_with_code_and_last_stderr_line(db_path: str) -> None:
    """Exit code 3 fails the task; the error names the code and the last stderr line."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", "echo noise >&2; echo 'disk on fire' >&2; exit 3")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.FAILED
    assert done.error is not None
    assert done.error.startswith("ProcessFailedError: ")
    assert "exited with code 3: disk on fire" in done.error


async def test_death_by_signal_names_the_signal(db_path: str) -> None:
    """A process killed by a signal fails the task with the signal's name."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", "kill -KILL $$")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.FAILED
    assert "killed by signal SIGKILL (9)" in (done.error or "")


async def test_cancel_ends_the_whole_process_tree(db_path: str, groups: list[int]) -> None:
    """Cancel terminates every process of the group; none is left, not even a zombie."""
    async with manager(db_path, cancel_grace=5.0) as tm:
        task = await tm.launch("sh", "sh -c 'sleep 30 & sleep 30; wait'")
        pgid = await started_group(tm, task.id, members=3)
        groups.append(pgid)
        tree = set(group_members(pgid))
        await tm.cancel(task.id)
        done = await tm.wait(task.id, timeout=TIMEOUT)
        assert done.state is TaskState.CANCELLED
        assert not running_members(pgid)
        assert_reaped(pgid)  # the runner's own child: reaped by the runner
        # The grandchildren's zombies are init's to reap (it may take a moment).
        await until(lambda: not (tree & set(group_members(pgid))))


async def test_process_ignoring_sigterm_is_killed_after_the_grace(
    db_path: str, groups: list[int]
) -> None:
    """A group that ignores SIGTERM gets SIGKILL once the grace is over."""
    async with manager(db_path, cancel_grace=0.5) as tm:
        task = await tm.launch("sh", "trap '' TERM; sleep 30 & sleep 30; wait")
        pgid = await started_group(tm, task.id, members=3)
        groups.append(pgid)
        await tm.cancel(task.id)
        done = await tm.wait(task.id, timeout=TIMEOUT)
        assert done.state is TaskState.CANCELLED
        await until(lambda: not running_members(pgid))
        assert_reaped(pgid)


async def test_force_cancel_kills_at_once(db_path: str, groups: list[int]) -> None:
    """A forced cancel SIGKILLs the group without waiting for the (long) grace."""
    async with manager(db_path, cancel_grace=3600.0) as tm:
        task = await tm.launch("sh", "trap '' TERM; sleep 30 & sleep 30; wait")
        pgid = await started_group(tm, task.id, members=3)
        groups.append(pgid)
        try:
            cancelled = await tm.cancel(task.id, force=True)
            assert cancelled.state is TaskState.CANCELLED
            await until(lambda: not running_members(pgid))  # long before the hour of grace
        finally:  # on failure, end the group so the manager closes quickly
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


async def test_runner_honours_a_forced_cancel_request(groups: list[int]) -> None:
    """With ``ctx.force`` set, a cancelled runner SIGKILLs the group at once."""
    now = datetime.now(UTC)
    task = Task(
        id="t1", state=TaskState.STARTING, agent="sh", prompt="trap '' TERM; sleep 30",
        attempt=1, version=2, created_at=now, updated_at=now,
    )  # fmt: skip
    pids: list[str] = []

    async def append(task_id: str, events: list[Event], reason: str | None) -> Task:
        pids.extend(getattr(e, "session_id", None) or "" for e in events)
        return task

    ctx = RunContext(task, append=append, clock=SystemClock(), cancel_grace=30.0)
    run = asyncio.ensure_future(SubprocessRunner.shell()(ctx))
    await until(lambda: any(pids))
    pgid = int(next(p for p in pids if p).removeprefix("pid:"))
    groups.append(pgid)
    await until(lambda: bool(running_members(pgid)))
    ctx.request_cancel(force=True)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, timeout=10.0)
    assert not running_members(pgid)
    assert_reaped(pgid)


async def test_missing_executable_fails_the_task_clearly(db_path: str) -> None:
    """A command that does not exist fails the task with a start error naming it."""
    async with manager(db_path) as tm:
        tm.register("ghost", SubprocessRunner(["tasktrail-no-such-program", "{prompt}"]))
        task = await tm.launch("ghost", "hello")
        done = await tm.wait(task.id, timeout=TIMEOUT)
    assert done.state is TaskState.FAILED
    assert done.error is not None
    assert done.error.startswith("ProcessStartError: cannot start command ")
    assert "No such file or directory: 'tasktrail-no-such-program'" in done.error


PRINT_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
NASTY = "a b; echo pwned $(id) `id` 'single' \"double\" | cat && rm -rf /nonexistent * {agent}"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-c", PRINT_ARGV, "{prompt}", "--id={task_id}"], id="list"),
        pytest.param(f"{sys.executable} -c '{PRINT_ARGV}' {{prompt}} --id={{task_id}}", id="str"),
    ],
)
async def test_prompt_is_one_argument_without_shell(db_path: str, command: str | list[str]) -> None:
    """Shell metacharacters in the prompt reach the program as one literal argument."""
    async with manager(db_path) as tm:
        tm.register("argv", SubprocessRunner(command))
        task = await tm.launch("argv", NASTY)
        done = await tm.wait(task.id, timeout=TIMEOUT)
        output = await tm.get_output(task.id)
    assert done.state is TaskState.COMPLETED
    assert json.loads(output) == [NASTY, f"--id={task.id}"]


async def test_shell_template_inserts_the_prompt_quoted(db_path: str) -> None:
    """With ``shell=True`` the prompt is inserted quoted: one word, never run."""
    async with manager(db_path) as tm:
        tm.register("quoted", SubprocessRunner("printf '[%s]\\n' {prompt} {attempt}", shell=True))
        task = await tm.launch("quoted", NASTY)
        done = await tm.wait(task.id, timeout=TIMEOUT)
        output = await tm.get_output(task.id)
    assert done.state is TaskState.COMPLETED
    assert output == f"[{NASTY}]\n[1]\n"


async def test_environment_and_working_directory(db_path: str, tmp_path: Path) -> None:
    """The process runs in ``cwd`` with ``env`` and the task's id in its environment."""
    async with manager(db_path) as tm:
        tm.register("env", SubprocessRunner.shell(cwd=tmp_path, env={"GREETING": "hello"}))
        task = await tm.launch("env", 'echo "$GREETING $TASKTRAIL_TASK_ID $TASKTRAIL_ATTEMPT"; pwd')
        await tm.wait(task.id, timeout=TIMEOUT)
        output = await tm.get_output(task.id)
    assert output == f"hello {task.id} 1\n{tmp_path}\n"


async def test_background_process_holding_the_output_is_ended(
    db_path: str, groups: list[int]
) -> None:
    """When the main process exits, a leftover holding the pipes does not keep the task."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", "sleep 30 & echo $$")
        done = await tm.wait(task.id, timeout=TIMEOUT)
        pgid = int(await tm.get_output(task.id))
        groups.append(pgid)
    assert done.state is TaskState.COMPLETED
    assert not running_members(pgid)


async def test_undecodable_output_is_replaced_not_fatal(db_path: str) -> None:
    """Bytes that are not UTF-8 become U+FFFD; the task still completes."""
    async with manager(db_path) as tm:
        task = await tm.launch("sh", r"printf 'caf\351\n'")
        done = await tm.wait(task.id, timeout=TIMEOUT)
        output = await tm.get_output(task.id)
    assert done.state is TaskState.COMPLETED
    assert output == "caf\ufffd\n"


@pytest.mark.parametrize(
    ("command", "options"),
    [
        pytest.param("", {}, id="empty-str"),
        pytest.param([], {}, id="empty-list"),
        pytest.param("echo 'unbalanced", {}, id="bad-quotes"),
        pytest.param(["echo", "{prompt}"], {"shell": True}, id="shell-with-list"),
        pytest.param("echo", {"grace": -1}, id="negative-grace"),
        pytest.param("echo", {"encoding": "no-such-codec"}, id="bad-encoding"),
    ],
)
def test_bad_configuration_is_refused(command: str | list[str], options: dict[str, Any]) -> None:
    """A runner that could never start is refused when it is made."""
    with pytest.raises(InvalidInputError):
        SubprocessRunner(command, **options)
