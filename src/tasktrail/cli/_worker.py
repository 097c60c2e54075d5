"""``tasktrail worker``: run queued tasks, the config's command agents and your Python code.

``--app pkg.module:obj`` imports the module and serves the runners registered on ``obj``
(a :class:`~tasktrail.Registry` or a :class:`~tasktrail.TaskManager`), beside the agents of
``tasktrail.toml``. Logging goes to stderr (``--log-format text|json``); the steps of the
worker's tasks are printed from the log, on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Final

import click

from tasktrail.cli._app import (
    CLI_POLL,
    config_option,
    console,
    database,
    db_option,
    main,
    on_signals,
    renamed,
    run_async,
)
from tasktrail.cli._config import Config, load_config
from tasktrail.cli._metrics import MetricsServer, WorkerCounters, database_families, render
from tasktrail.errors import AppLoadError, ConfigError, TasktrailError
from tasktrail.events import (
    EVENT_TAGS,
    CancelRequested,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.lifecycle import ACTIVE_STATES
from tasktrail.runtime._aio import first_of
from tasktrail.runtime.context import Runner
from tasktrail.runtime.manager import TaskManager
from tasktrail.runtime.registry import Registry
from tasktrail.store import open_store

__all__ = ["load_app", "setup_logging"]

_log = logging.getLogger("tasktrail.cli.worker")


def load_app(spec: str) -> dict[str, Runner]:
    """The runners of ``MODULE:OBJECT`` (a Registry or a TaskManager), imported now.

    The current directory is searched first, as ``python -m`` would. Every failure is an
    :class:`~tasktrail.AppLoadError` saying what is wrong, never a traceback.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(spec, "expected MODULE:OBJECT, for example myapp.jobs:tasks")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise AppLoadError(spec, f"no module named {err.name!r}") from err
        raise AppLoadError(spec, f"importing {module_name!r} failed: {err}") from err
    except Exception as err:
        raise AppLoadError(
            spec, f"importing {module_name!r} raised {type(err).__name__}: {err}"
        ) from err
    target: Any = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(spec, f"{module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, Registry):
        runners = dict(target.runners)
    elif isinstance(target, TaskManager):
        runners = dict(target.worker.runners)
    else:
        raise AppLoadError(
            spec,
            f"{attribute!r} is a {type(target).__name__}, not a tasktrail.Registry or TaskManager",
        )
    if not runners:
        raise AppLoadError(spec, f"{attribute!r} has no agent registered on it")
    return runners


class _JsonLines(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(log_format: str, *, quiet: bool) -> None:
    """Send the ``tasktrail`` loggers to stderr: text with timestamps, or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tasktrail")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _runners_for(
    settings: Config, agents: tuple[str, ...], app: dict[str, Runner]
) -> dict[str, Any]:
    runners: dict[str, Any] = {**settings.runners(), **app}
    unknown = sorted(set(agents) - set(runners))
    if unknown:
        raise ConfigError(
            settings.path or "tasktrail.toml",
            f"unknown agent(s) {', '.join(map(repr, unknown))}; known: {', '.join(runners)}",
        )
    return {name: runners[name] for name in agents} if agents else runners


@main.command()
@db_option
@config_option
@click.option(
    "--app", "apps", multiple=True, metavar="MODULE:OBJECT",
    help="Serve the Python runners registered on this Registry or TaskManager (repeat).",
)  # fmt: skip
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1, max=1_000_000), metavar="N", default=None,
    help="Tasks run at once [default: worker.max_running of the config, else 10].",
)  # fmt: skip
@click.option("--agent", "agents", multiple=True, help="Run only this agent's tasks (repeat).")
@click.option(
    "--worker-id", "worker_id", default=None, metavar="ID",
    help="This worker's id in the log [default: host:pid:random].",
)  # fmt: skip
@click.option("--id", "old_worker_id", default=None, hidden=True, help="Old name of --worker-id.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once no task is left to run.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="How log records are written to stderr (json: one object per line).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print no steps; log only warnings.")
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), metavar="N", default=None,
    help="Serve Prometheus metrics at http://HOST:N/metrics (0: any free port).",
)  # fmt: skip
@click.option(
    "--metrics-host", metavar="ADDRESS", default="127.0.0.1", show_default=True,
    help="The address the metrics are served on.",
)  # fmt: skip
@run_async
async def worker(
    db: str | None,
    config: str | None,
    apps: tuple[str, ...],
    concurrency: int | None,
    agents: tuple[str, ...],
    worker_id: str | None,
    old_worker_id: str | None,
    exit_when_idle: bool,
    log_format: str,
    quiet: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run queued tasks until stopped (Ctrl-C or SIGTERM).

    Serves the agents of tasktrail.toml (and the built-in `shell`) and, with --app, the
    Python runners registered in your code. On stop, running tasks are stopped (SIGTERM,
    then SIGKILL after the grace) and re-queued, never left running. A worker killed
    outright (kill -9) leaves its tasks to the next worker, which re-queues or fails them
    with a logged reason. Paused agents and keys (`tasktrail pause`) are left alone.

    Prints each step of its tasks on stdout (claimed, started, completed...), its own
    lines on stderr. With --metrics-port, serves Prometheus metrics: the database's
    figures and this worker's claims, lost claims, run times and commit times.

    \b
    Example:
      tasktrail worker --concurrency 2
      tasktrail worker --app myapp.jobs:tasks --log-format json
      tasktrail worker --agent shell --exit-when-idle
      tasktrail worker --metrics-port 9464
    """
    worker_id = renamed(worker_id, old_worker_id, old="--id", new="--worker-id")
    setup_logging(log_format, quiet=quiet)
    settings = load_config(config)
    python: dict[str, Runner] = {}
    for spec in apps:
        python.update(load_app(spec))
    runners = _runners_for(settings, agents, python)
    options = settings.worker.manager_settings()
    if concurrency is not None:
        options["max_running"] = concurrency
    stop = asyncio.Event()
    err = console(stderr=True)
    # With JSON logs, the worker's own lines are log records too: stderr stays parseable.
    say = _log.warning if log_format == "json" else err.print

    def stopping(number: int) -> None:
        if not stop.is_set():
            say(f"{signal.Signals(number).name}: stopping; running tasks are re-queued")
        stop.set()

    target = database(db)
    async with open_store(target) as store:  # from here on: recovery on start is reported
        reporter_start = await store.head()
    with on_signals(stopping, signal.SIGINT, signal.SIGTERM):
        async with TaskManager(
            target, limits=settings.limits, worker_id=worker_id, **options
        ) as tm:
            for name, runner in runners.items():
                tm.register(name, runner)
            say(
                f"worker {tm.worker_id} on {target}: agents {', '.join(runners)}; "
                f"up to {options['max_running']} at once. Ctrl-C stops it."
            )
            reporter = _Reporter(tm.worker.worker_id, reporter_start, quiet=quiet)
            following = None
            if not quiet or metrics_port is not None:
                following = asyncio.create_task(reporter.follow(tm.store))
            metrics = None
            if metrics_port is not None:
                metrics = await _serve_metrics(tm, reporter, metrics_host, metrics_port, say)
            failed = tm.worker.failed
            try:
                while not stop.is_set() and not failed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            first_of(stop.wait(), failed.wait()), timeout=options["poll_interval"]
                        )
                    if exit_when_idle and not failed.is_set() and await _idle(tm, list(runners)):
                        say("no task left to run: stopping")
                        break
            finally:
                if metrics is not None:
                    await metrics.close()
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
        if tm.worker.failure is not None:
            raise tm.worker.failure
        if not quiet:  # what happened while it stopped (re-queued tasks)
            async with open_store(target) as store:
                await reporter.catch_up(store)
    say(f"worker {tm.worker_id} stopped")


async def _serve_metrics(
    tm: TaskManager, reporter: _Reporter, host: str, port: int, say: Any
) -> MetricsServer:
    """Start the ``/metrics`` server of this worker; says where it listens."""

    async def collect() -> str:
        families = await database_families(tm.store)
        families += reporter.counters.families(tm.worker.worker_id, tm.store.commit_statistics())
        return render(families)

    server = MetricsServer(collect, host=host, port=port)
    try:
        url = await server.start()
    except OSError as err:
        raise TasktrailError(
            f"cannot serve metrics on {host}:{port}: {err.strerror or err}"
        ) from err
    say(f"metrics at {url}")
    return server


async def _idle(tm: TaskManager, agents: list[str]) -> bool:
    """Nothing this worker may start is queued (paused agents and keys do not count),
    and nothing runs in this worker."""
    pauses = await tm.store.list_pauses()
    held_agents = {p.target for p in pauses if p.kind == "agent"}
    held_keys = {p.target for p in pauses if p.kind == "key"}
    free = [a for a in agents if a not in held_agents]
    queued = await tm.store.queued_tasks(limit=500, agents=free) if free else []
    if any(t.limit_key not in held_keys for t in queued):
        return False
    active = await tm.store.list_tasks(state=ACTIVE_STATES, worker_id=tm.worker_id)
    return not active


_REPORTED: Final = {
    EVENT_TAGS[TaskClaimed]: "claimed",
    EVENT_TAGS[TaskStarted]: "started",
    EVENT_TAGS[TaskCompleted]: "[green]completed[/]",
    EVENT_TAGS[TaskFailed]: "[red]failed[/]",
    EVENT_TAGS[TaskCancelled]: "[yellow]cancelled[/]",
    EVENT_TAGS[TaskRequeued]: "re-queued",
    EVENT_TAGS[CancelRequested]: "cancel requested",
}


class _Reporter:
    """Prints, from the log, each step of the tasks this worker claimed, and every recovery
    decision (which another worker may have made)."""

    def __init__(self, worker_id: str, after: int, *, quiet: bool = False) -> None:
        self.worker_id = worker_id
        self.after = after
        self.quiet = quiet
        self.mine: set[str] = set()
        self.started: dict[str, float] = {}
        self.agents: dict[str, str] = {}
        self.counters = WorkerCounters()
        self.out = console()

    async def catch_up(self, store: Any) -> None:
        """Print every step logged since the last call."""
        while events := await store.read_all(after=self.after, limit=1000):
            for event in events:
                await self._count(store, event)
                recovered = (event.reason or "").startswith("recovery:")
                reported = event.stream_id in self.mine or recovered
                if reported and event.type in _REPORTED and not self.quiet:
                    self.out.print(_report_line(event))
                if event.stream_id in self.mine and _ends_attempt(event, self.worker_id):
                    self.mine.discard(event.stream_id)
                    self.started.pop(event.stream_id, None)
            self.after = events[-1].sequence

    async def _count(self, store: Any, event: RecordedEvent) -> None:
        """Feed the worker's metrics: its claims, the claims it lost, its finished tasks."""
        payload, task_id = event.payload, event.stream_id
        if isinstance(payload, TaskClaimed) and event.actor == self.worker_id:
            self.mine.add(task_id)
            self.counters.claims += 1
            if task_id not in self.agents:
                task = await store.get_task(task_id)
                self.agents[task_id] = task.agent if task is not None else "?"
            return
        if task_id not in self.mine:
            return
        if isinstance(payload, TaskStarted):
            self.started[task_id] = event.timestamp
        elif event.actor != self.worker_id and (
            isinstance(payload, TaskClaimed | TaskRequeued)
            or (isinstance(payload, TaskFailed) and (event.reason or "").startswith("recovery:"))
        ):
            self.counters.claims_lost += 1  # recovery took the task from this worker
        elif isinstance(payload, TaskCompleted | TaskFailed | TaskCancelled):
            began = self.started.get(task_id)
            self.counters.finished_task(
                self.agents.pop(task_id, "?"),
                event.type.removeprefix("task."),
                None if began is None else max(0.0, event.timestamp - began),
            )

    async def follow(self, store: Any) -> None:
        """Catch up every ``CLI_POLL`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(CLI_POLL)
            with contextlib.suppress(TasktrailError):  # busy: the next round catches up
                await self.catch_up(store)


def _ends_attempt(event: RecordedEvent, worker_id: str) -> bool:
    """Whether ``event`` ends this worker's hold on the task (finished, re-queued, or
    claimed by another worker)."""
    payload = event.payload
    if isinstance(payload, TaskCompleted | TaskFailed | TaskCancelled | TaskRequeued):
        return True
    return isinstance(payload, TaskClaimed) and event.actor != worker_id


def _report_line(event: RecordedEvent) -> str:
    detail = ""
    payload = event.payload
    if isinstance(payload, TaskFailed):
        detail = f": {payload.error}"
    elif event.reason and not isinstance(payload, CancelRequested):
        detail = f" ({event.reason})"
    elif isinstance(payload, TaskStarted) and payload.session_id:
        detail = f" ({payload.session_id})"
    return (
        f"{event.recorded_at.astimezone():%H:%M:%S} {event.stream_id} "
        f"{_REPORTED[event.type]}{detail}"
    )
