"""``tasktrail.toml``: the agents of the command line, and the settings of its workers.

An agent is a command template run by :class:`~tasktrail.SubprocessRunner`::

    [worker]                      # TaskManager settings for `worker` and `run`
    max_running = 4               # the library's default: 10
    run_timeout = 900             # seconds; 0 means no limit (recorded in tasks at submit)

    [limits]                      # at most this many running at once, across all workers
    claude = 2

    [agents.claude]
    command = ["claude", "-p", "{prompt}"]
    cwd = "~/src/project"
    env = { CLAUDE_MODEL = "sonnet" }

The file is ``--config PATH``, else ``$TASKTRAIL_CONFIG``, else ``tasktrail.toml`` in the
current directory, else ``tasktrail/tasktrail.toml`` in the user's config directory
(``$XDG_CONFIG_HOME``, by default ``~/.config``). Without one, only the built-in ``shell``
agent exists: it runs the prompt itself with ``/bin/sh -c``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from tasktrail.errors import ConfigError, InvalidInputError
from tasktrail.runtime.subprocess import SubprocessRunner

__all__ = ["SHELL_AGENT", "AgentConfig", "Config", "WorkerConfig", "find_config", "load_config"]

SHELL_AGENT: Final = "shell"
FILE_NAME: Final = "tasktrail.toml"


class AgentConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[agents.NAME]`` table: how a task of that agent is run."""

    command: str | list[str]
    """The command template; ``{prompt}``, ``{task_id}``, ``{agent}``, ``{attempt}`` are
    filled in (a str is split like a shell would, unless ``shell``)."""
    shell: bool = False
    """Run ``command`` (one str) with ``/bin/sh -c``, every value inserted quoted."""
    cwd: str | None = None
    env: dict[str, str] = {}
    grace: float | None = None
    """Seconds between SIGTERM and SIGKILL when the task is stopped."""
    encoding: str = "utf-8"
    stdin: str = "none"
    """What the process reads on stdin: ``none``, ``input`` (the task's input as JSON) or
    ``prompt``."""
    description: str = ""


class WorkerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``[worker]`` table: :class:`~tasktrail.TaskManager` settings.

    A duration of 0 means "no limit" (TOML has no null).
    """

    max_running: int = 10
    poll_interval: float = 2.0
    task_ttl: float = 0.0
    run_timeout: float = 0.0
    queue_timeout: float = 0.0
    start_timeout: float = 60.0
    max_attempts: int = 1
    retry_backoff: float = 1.0
    cancel_grace: float = 5.0
    lease_timeout: float = 30.0

    def manager_settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~tasktrail.TaskManager`."""
        settings = msgspec.structs.asdict(self)
        for name in ("task_ttl", "run_timeout", "queue_timeout", "start_timeout"):
            settings[name] = settings[name] or None
        return settings

    def launch_settings(self) -> dict[str, Any]:
        """The settings a task launched from the command line records (its deadlines,
        its attempts): the keyword arguments of :class:`~tasktrail.AsyncClient`."""
        settings = self.manager_settings()
        names = ("task_ttl", "run_timeout", "queue_timeout", "max_attempts", "poll_interval")
        return {name: settings[name] for name in names}


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A whole ``tasktrail.toml``."""

    worker: WorkerConfig = WorkerConfig()
    limits: dict[str, int] = {}
    agents: dict[str, AgentConfig] = {}
    path: str | None = None
    """Where it was read from (``None``: no file, the defaults)."""

    def agent_names(self) -> list[str]:
        """Every agent a worker with this config runs, the built-in ``shell`` included."""
        return sorted({SHELL_AGENT, *self.agents})

    def runners(self) -> dict[str, SubprocessRunner]:
        """A runner per agent. Raises ConfigError naming an agent whose command is unusable."""
        runners = {SHELL_AGENT: SubprocessRunner.shell()}
        for name, agent in self.agents.items():
            try:
                runners[name] = SubprocessRunner(
                    agent.command,
                    shell=agent.shell,
                    cwd=os.path.expanduser(agent.cwd) if agent.cwd else None,
                    env=agent.env,
                    grace=agent.grace,
                    encoding=agent.encoding,
                    stdin=agent.stdin,
                )
            except InvalidInputError as err:
                raise ConfigError(self.path or FILE_NAME, f"agent {name!r}: {err}") from err
        return runners

    def check_agent(self, agent: str) -> None:
        """Raise ConfigError unless a worker with this config can run ``agent``."""
        if agent not in self.agent_names():
            where = self.path or f"no {FILE_NAME} found"
            raise ConfigError(
                where,
                f"unknown agent {agent!r}; known: {', '.join(self.agent_names())}. Define it "
                f"as [agents.{agent}] with a command, name the Python module that registers "
                "it with --app MODULE:OBJECT, or pass --any-agent",
            )


def _user_config_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tasktrail"


def find_config(explicit: str | None, *, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The config file to read: explicit, ``$TASKTRAIL_CONFIG``, ./, the user's; or None."""
    chosen = explicit or environ.get("TASKTRAIL_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not _is_file(path):
            raise ConfigError(str(path), "no such configuration file")
        return path
    for candidate in (Path(FILE_NAME), _user_config_dir(environ) / FILE_NAME):
        if _is_file(candidate):
            return candidate
    return None


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; ConfigError when this user may not even look."""
    try:
        return path.is_file()
    except PermissionError as err:
        raise ConfigError(
            str(path),
            "permission denied: cannot look for a configuration file here; pass --config "
            "FILE or set TASKTRAIL_CONFIG (or XDG_CONFIG_HOME)",
        ) from err


def load_config(explicit: str | None = None, *, environ: Mapping[str, str] = os.environ) -> Config:
    """Read and check the configuration (the defaults when there is no file)."""
    path = find_config(explicit, environ=environ)
    if path is None:
        return Config()
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), f"cannot read: {err.strerror or err}") from err
    try:
        config = msgspec.toml.decode(raw, type=Config)
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), str(err)) from err
    if config.path is not None:
        raise ConfigError(str(path), "unknown key 'path'")
    config = msgspec.structs.replace(config, path=str(path))
    _check_values(config)
    config.runners()  # every agent's command must be usable now, not at the first task
    return config


MAX_COUNT: Final = 10_000
"""The largest ``max_running`` and ``[limits]`` value: tasks running at once."""
MAX_ATTEMPTS: Final = 1_000
MAX_POLL_INTERVAL: Final = 3_600.0
"""Seconds; a worker that polls less often than hourly is not what anyone meant."""
MAX_WAIT: Final = 86_400.0
"""Seconds (a day): the largest lease_timeout, cancel_grace, retry_backoff and agent grace."""
MAX_DEADLINE: Final = 10 * 365 * 86_400.0
"""Seconds (ten years of 365 days, as TaskManager): the largest task_ttl, run_timeout and
queue_timeout."""

# name: (smallest, smallest allowed itself, largest, unit); 0 means "no limit" where allowed
_WORKER_RANGES: Final[dict[str, tuple[float, bool, float, str]]] = {
    "max_running": (1, True, MAX_COUNT, ""),
    "max_attempts": (1, True, MAX_ATTEMPTS, ""),
    "poll_interval": (0.0, False, MAX_POLL_INTERVAL, " seconds"),
    "lease_timeout": (0.0, False, MAX_WAIT, " seconds"),
    "cancel_grace": (0.0, True, MAX_WAIT, " seconds"),
    "retry_backoff": (0.0, True, MAX_WAIT, " seconds"),
    "task_ttl": (0.0, True, MAX_DEADLINE, " seconds (0: no limit)"),
    "run_timeout": (0.0, True, MAX_DEADLINE, " seconds (0: no limit)"),
    "queue_timeout": (0.0, True, MAX_DEADLINE, " seconds (0: no limit)"),
    "start_timeout": (0.0, True, MAX_WAIT, " seconds (0: no limit)"),
}


def _check_values(config: Config) -> None:
    """Every setting within its documented range: finite, not negative, not absurdly large
    (a NaN poll interval spins the scheduler; a huge max_running overflows SQLite)."""
    where = config.path or FILE_NAME
    for name, value in msgspec.structs.asdict(config.worker).items():
        low, inclusive, high, unit = _WORKER_RANGES[name]
        _check(where, f"worker.{name}", value, low, inclusive, high, unit)
    for key, limit in config.limits.items():
        _check(where, f"limits.{key}", limit, 1, True, MAX_COUNT, "")
    for name, agent in config.agents.items():
        if agent.grace is not None:
            _check(where, f"agents.{name}.grace", agent.grace, 0.0, True, MAX_WAIT, " seconds")


def _check(
    where: str, key: str, value: float, low: float, inclusive: bool, high: float, unit: str
) -> None:
    if math.isfinite(value) and (value >= low if inclusive else value > low) and value <= high:
        return
    above = ">=" if inclusive else ">"
    raise ConfigError(
        where, f"{key} must be {above} {low:g} and <= {high:.10g}{unit}, not {value!r}"
    )
