"""Run a task as a command: output streamed, exit code decides, cancel ends the process group.

:class:`SubprocessRunner` starts one process per attempt in a new session (so in its own
process group), records ``pid:<pid>`` as the task's session id, and streams the process's
stdout and stderr into the task's output as they arrive. Exit code 0 completes the task
with ``{"exit_code": 0}``; any other exit, or death by a signal, raises
:class:`ProcessFailedError`, which names the code or the signal and the last stderr line.

Stopping (cancel, timeout, TTL, shutdown): SIGTERM (and SIGCONT) to the whole process
group, up to ``grace`` seconds for every process of the group to exit, then SIGKILL to the
group; a forced cancel sends SIGKILL at once. The process is always reaped, never left a
zombie. POSIX only.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, Self

import msgspec

from tasktrail.errors import (
    InvalidInputError,
    ProcessFailedError,
    ProcessStartError,
)
from tasktrail.projection import Task
from tasktrail.runtime.context import RunContext, to_the_end

__all__ = ["SubprocessRunner", "end_orphaned_attempts"]

_PLACEHOLDER = re.compile(r"\{(prompt|input|task_id|agent|attempt)\}")
_STDIN: Final = ("none", "input", "prompt")
_HIGH_WATER = 1 << 20
"""Bytes of output read but not yet written before reading from the pipes pauses."""
_DRAIN = 1.0
"""Seconds to wait for the pipes to close once the process exited (or was ended)."""
_POLL = 0.05
"""Seconds between checks whether a process group that was signalled is gone."""
_TAIL = 4096
"""Characters of stderr kept for the error message."""


def _json(value: Any) -> str:
    """A JSON value as compact text (``null`` for ``None``)."""
    return msgspec.json.encode(value).decode()


class _Pipes(asyncio.SubprocessProtocol):
    """Collects the child's output in arrival order, and notices its exit.

    One queue for both pipes keeps stdout and stderr in the order they arrived, and lets
    one coroutine write them (no interleaving of two writers). Reading pauses while
    ``_HIGH_WATER`` bytes wait, so a chatty child meets back-pressure.
    """

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self.exited = asyncio.Event()
        self._transport: asyncio.SubprocessTransport | None = None
        self._open = {1, 2}
        self._queued = 0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.chunks.put_nowait((fd, data))
        self._queued += len(data)
        if self._queued >= _HIGH_WATER and not self._paused:
            self._set_reading(on=False)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            self.chunks.put_nowait(None)

    def process_exited(self) -> None:
        self.exited.set()

    async def next_chunk(self) -> tuple[int, bytes] | None:
        """The next ``(fd, bytes)`` read, or ``None`` once both pipes are closed."""
        item = await self.chunks.get()
        if item is not None:
            self._queued -= len(item[1])
            if self._paused and self._queued < _HIGH_WATER // 2:
                self._set_reading(on=True)
        return item

    def _set_reading(self, *, on: bool) -> None:
        self._paused = not on
        if self._transport is None:
            return
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd)
            if isinstance(pipe, asyncio.ReadTransport) and not pipe.is_closing():
                if on:
                    pipe.resume_reading()
                else:
                    pipe.pause_reading()


_PROC_STAT = os.path.exists("/proc/self/stat")
"""Linux: the group's processes can be told apart from its zombies."""


def _live_processes() -> Iterator[tuple[int, int]]:
    """``(pid, process group)`` of every process that is not a zombie, from ``/proc``."""
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
        fields = stat[stat.rindex(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in (b"Z", b"X"):
            yield int(pid), int(fields[2])


def _group_runs(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies do not count), from ``/proc``.

    The child's own children are reaped by init once the child is gone, and init may take
    its time (seconds, in some containers): signal 0 would count those zombies as alive.
    """
    return any(group == pgid for _, group in _live_processes())


def end_orphaned_attempts(attempts: Iterable[Task]) -> int:
    """SIGKILL what still runs of attempts whose worker died on this host; how many
    processes were signalled.

    A worker killed outright (kill -9) cannot end its processes: they run on, and the task's
    next attempt would run beside them. Recovery calls this before it re-queues such tasks.
    A process is ended only if it is in the attempt's group (session id ``pid:<pgid>``)
    and its environment names the same task and attempt, so a reused group id is safe.
    Linux only (``/proc``); elsewhere nothing is signalled.
    """
    wanted: dict[int, bytes] = {}
    for task in attempts:
        session = task.session_id or ""
        if session.startswith("pid:") and session[4:].isdigit():
            marker = f"TASKTRAIL_TASK_ID={task.id}\0TASKTRAIL_ATTEMPT={task.attempt}"
            wanted[int(session[4:])] = marker.encode()
    if not wanted or not _PROC_STAT:
        return 0
    ended = 0
    for pid, group in list(_live_processes()):
        if group not in wanted:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:
                environment = b"\0" + file.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        task_id, attempt = wanted[group].split(b"\0")
        if b"\0" + task_id + b"\0" in environment and b"\0" + attempt + b"\0" in environment:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                ended += 1
    return ended


class _Group:
    """The child's process group (the child leads it: ``start_new_session``)."""

    def __init__(self, pid: int, pipes: _Pipes) -> None:
        self.pid = pid
        self._pipes = pipes

    def alive(self) -> bool:
        """Whether the child is unreaped or any other process of its group still runs."""
        if not self._pipes.exited.is_set():
            return True
        if _PROC_STAT:
            return _group_runs(self.pid)
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, not ours to signal (macOS answers so for zombies)
        return True

    def signal(self, number: int) -> None:
        # Only while alive(): once the group is empty and the child reaped, the number
        # may be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, number)

    async def end(self, grace: float, *, force: bool) -> None:
        """SIGTERM the group, wait up to ``grace``, SIGKILL what is left; reap the child."""
        loop = asyncio.get_running_loop()
        if not force and self.alive():
            self.signal(signal.SIGTERM)
            self.signal(signal.SIGCONT)  # a stopped process only sees SIGTERM once continued
            deadline = loop.time() + grace
            while self.alive() and (left := deadline - loop.time()) > 0:  # noqa: ASYNC110 (no event tells when a group is empty)
                await asyncio.sleep(min(_POLL, left))
        if self.alive():
            self.signal(signal.SIGKILL)
        await self._pipes.exited.wait()
        # SIGKILL is not instant: wait (briefly) until no process of the group runs.
        deadline = loop.time() + _DRAIN
        while self.alive() and loop.time() < deadline:
            self.signal(signal.SIGKILL)
            await asyncio.sleep(_POLL / 5)


class _Tail:
    """The end of what the process wrote to stderr."""

    def __init__(self) -> None:
        self.text = ""

    def add(self, text: str) -> None:
        self.text = (self.text + text)[-_TAIL:]

    def last_line(self, limit: int = 500) -> str:
        for line in reversed(self.text.splitlines()):
            if line.strip():
                line = line.strip()
                return line if len(line) <= limit else line[: limit - 3] + "..."
        return ""


async def _settle(pump: asyncio.Future[None]) -> None:
    """Let the output pump finish (the pipes close once the group is gone), else stop it."""
    if not pump.done():
        await asyncio.wait({pump}, timeout=_DRAIN)
    if not pump.done():
        pump.cancel()  # a process outside the group still holds the pipes
        await asyncio.wait({pump})
    if not pump.cancelled():
        pump.exception()  # retrieved: it was raised already, or the attempt failed anyway


class SubprocessRunner:
    """Runs each attempt of a task as a process (an agent CLI, a script, a shell command).

    Args:
        command: a template: a list of arguments, or one str (split like a shell would,
            with :func:`shlex.split`, unless ``shell``). ``{prompt}``, ``{input}`` (the
            task's input as JSON, ``null`` without one), ``{task_id}``, ``{agent}`` and
            ``{attempt}`` are replaced by the task's values; no other
            brace is touched, so ``awk '{print $1}'`` needs no escaping. Without ``shell``
            each argument is filled in on its own: the prompt stays one argument and is
            never interpreted by a shell. With ``shell``, the command runs as
            ``/bin/sh -c`` and every value is inserted quoted (:func:`shlex.quote`), so
            write ``{prompt}``, not ``'{prompt}'``.
        shell: run ``command`` (one str) through ``/bin/sh -c``.
        cwd: the working directory (default: this process's).
        env: variables set on top of this process's environment. The process also gets
            ``TASKTRAIL_TASK_ID``, ``TASKTRAIL_AGENT`` and ``TASKTRAIL_ATTEMPT``.
        grace: seconds the process group has to exit after SIGTERM before SIGKILL
            (default: the manager's ``cancel_grace``).
        encoding: how the output is decoded (undecodable bytes become U+FFFD).
        stdin: what the process reads on its standard input: ``"none"`` (``/dev/null``,
            the default), ``"input"`` (the task's input as JSON) or ``"prompt"``.

    A process of the group that still holds the output pipes a second after the main
    process exited is ended with the group; a process that redirected its output (a
    daemon) is left alone.
    """

    manages_start: ClassVar[bool] = True
    """This runner records the start itself, with the session id ``pid:<pid>``."""

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        shell: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        grace: float | None = None,
        encoding: str = "utf-8",
        stdin: str = "none",
    ) -> None:
        if stdin not in _STDIN:
            raise InvalidInputError(f"stdin must be one of {', '.join(_STDIN)}, not {stdin!r}")
        if isinstance(command, str):
            if shell:
                template = [command]
            else:
                try:
                    template = shlex.split(command)
                except ValueError as err:
                    raise InvalidInputError(f"cannot split command {command!r}: {err}") from err
        else:
            if shell:
                raise InvalidInputError("with shell=True the command must be one str")
            template = list(command)
            if not all(isinstance(arg, str) for arg in template):
                raise InvalidInputError(f"every argument must be a str: {template!r}")
        if not template or not template[0].strip():
            raise InvalidInputError(f"the command is empty: {command!r}")
        if grace is not None and (not isinstance(grace, int | float) or grace < 0):
            raise InvalidInputError(f"grace must be a number of seconds >= 0, not {grace!r}")
        try:
            codecs.lookup(encoding)
        except LookupError as err:
            raise InvalidInputError(f"unknown encoding {encoding!r}") from err
        extra = dict(env or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise InvalidInputError("env must map str to str")
        self.command = command
        self.cwd = cwd
        self.env = extra
        self.grace = grace
        self.encoding = encoding
        self.stdin = stdin
        self._template = tuple(template)
        self._use_shell = shell

    @classmethod
    def shell(
        cls,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        grace: float | None = None,
        encoding: str = "utf-8",
    ) -> Self:
        """The built-in ``shell`` agent: the prompt itself is the command (``/bin/sh -c``)."""
        return cls(["/bin/sh", "-c", "{prompt}"], cwd=cwd, env=env, grace=grace, encoding=encoding)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.command!r}, shell={self._use_shell})"

    def argv(self, task: Task) -> list[str]:
        """The arguments this runner starts for ``task``."""
        values = {
            "prompt": task.prompt,
            "input": _json(task.input),
            "task_id": task.id,
            "agent": task.agent,
            "attempt": str(task.attempt),
        }
        if self._use_shell:
            script = _PLACEHOLDER.sub(lambda m: shlex.quote(values[m[1]]), self._template[0])
            return ["/bin/sh", "-c", script]
        return [_PLACEHOLDER.sub(lambda m: values[m[1]], arg) for arg in self._template]

    def _feed(self, task: Task) -> bytes | None:
        """What the process reads on stdin (``None``: nothing, /dev/null)."""
        if self.stdin == "input":
            return _json(task.input).encode()
        if self.stdin == "prompt":
            return task.prompt.encode(self.encoding, errors="replace")
        return None

    def _environment(self, task: Task) -> dict[str, str]:
        return {
            **os.environ,
            "TASKTRAIL_TASK_ID": task.id,
            "TASKTRAIL_AGENT": task.agent,
            "TASKTRAIL_ATTEMPT": str(task.attempt),
            **self.env,
        }

    async def __call__(self, ctx: RunContext) -> dict[str, int]:
        """Run one attempt: start, stream, wait; end the process group when stopped."""
        argv = self.argv(ctx.task)
        grace = ctx.cancel_grace if self.grace is None else self.grace
        loop = asyncio.get_running_loop()
        feed = self._feed(ctx.task)
        try:
            transport, pipes = await loop.subprocess_exec(
                _Pipes,
                *argv,
                stdin=subprocess.DEVNULL if feed is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=self._environment(ctx.task),
                start_new_session=True,
            )
        except OSError as err:
            raise ProcessStartError(argv, err) from err
        if feed is not None:
            writer = transport.get_pipe_transport(0)
            if isinstance(writer, asyncio.WriteTransport):
                writer.write(feed)  # buffered by the loop; a closed pipe is the child's choice
                writer.write_eof()
        group = _Group(transport.get_pid(), pipes)
        stderr = _Tail()
        pump = asyncio.ensure_future(self._pump(pipes, ctx, stderr))
        try:
            try:
                await ctx.started(session_id=f"pid:{group.pid}")
                await self._wait_exit(pipes, pump)
                await self._drain(group, pump, grace)
            except BaseException:
                await to_the_end(group.end(grace, force=ctx.force))
                raise
            finally:
                await to_the_end(_settle(pump))
        finally:
            transport.close()
        code = transport.get_returncode()
        assert code is not None  # the child was reaped: pipes.exited is set
        if code != 0:
            raise ProcessFailedError(argv, code, stderr.last_line())
        return {"exit_code": 0}

    async def _pump(self, pipes: _Pipes, ctx: RunContext, stderr: _Tail) -> None:
        """Write the output to the task as it arrives, until both pipes are closed."""
        decoders = {
            fd: codecs.getincrementaldecoder(self.encoding)(errors="replace") for fd in (1, 2)
        }
        while (item := await pipes.next_chunk()) is not None:
            fd, data = item
            await self._emit(ctx, fd, decoders[fd].decode(data), stderr)
        for fd, decoder in decoders.items():
            await self._emit(ctx, fd, decoder.decode(b"", final=True), stderr)

    @staticmethod
    async def _emit(ctx: RunContext, fd: int, text: str, stderr: _Tail) -> None:
        if not text:
            return
        if fd == 2:
            stderr.add(text)
        await ctx.write(text, channel="stderr" if fd == 2 else "stdout")

    @staticmethod
    async def _wait_exit(pipes: _Pipes, pump: asyncio.Future[None]) -> None:
        """Return once the child exited (and was reaped); raise if writing output failed."""
        exited = asyncio.ensure_future(pipes.exited.wait())
        try:
            while not exited.done():
                waiting: set[asyncio.Future[Any]] = {exited}
                if not pump.done():
                    waiting.add(pump)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if pump.done():
                    pump.result()
        finally:
            exited.cancel()

    @staticmethod
    async def _drain(group: _Group, pump: asyncio.Future[None], grace: float) -> None:
        """Read what is left; end the group if its processes still hold the pipes."""
        if not pump.done():
            await asyncio.wait({pump}, timeout=_DRAIN)
        if not pump.done():
            await group.end(grace, force=False)
            await asyncio.wait({pump}, timeout=_DRAIN)
        if pump.done():
            pump.result()
