"""What every part of the benchmark suite shares: the settings, the constants of the
workload, a figure and its comparison with a baseline, and the notes recorded beside them.

``run.py`` is the one command line; each part (``core.py``, ``runtime.py``, ``peers.py``,
``recovery.py``, ``postgres.py``) exposes functions that take the run's :class:`Settings`
and a ``say`` callback for progress lines and return an :class:`Outcome`.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import tasktrail

HERE: Final = Path(__file__).resolve().parent

# -- the workload ----------------------------------------------------------------------------

AGENT: Final = "bench"
"""The agent of every benchmark task."""
POLL_INTERVAL: Final = 0.5
"""Every manager's and client's ``poll_interval`` (a fallback: commits wake them)."""
LAUNCH_CHUNK: Final = 500
"""Launches per ``asyncio.gather`` wherever many tasks are launched at once."""
RAW_BATCH: Final = 100
"""Events per transaction in the raw batched baselines."""
PROBE_PAUSE: Final = 0.005
"""Seconds the under-load latency probe pauses between two launches."""
LIVE: Final = ("pending", "starting", "running")
PEERS: Final = ("eventsourcing", "huey", "dbos")
PARTS: Final = ("append", "core", "runtime", "backlog", "peers", "recovery", "postgres")
"""The parts of a run, in the order they run (``--only``)."""
TITLES: Final = {
    1: "Durable append",
    2: "Lifecycle and task throughput",
    3: "Launch latency",
    4: "Rebuild and replay",
    5: "Recovery",
    6: "Verification",
    7: "Memory",
    8: "PostgreSQL",
}
DEFAULT_SERVER: Final = os.environ.get(
    "TASKTRAIL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)

Say = Callable[[str], None]


async def noop(ctx: object) -> None:
    """The runner of every benchmark task: does nothing."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run is sized by (``run.py`` fills it from the command line)."""

    quick: bool
    repeat: int
    lifecycle_tasks: int
    """Tasks of the store-level lifecycle, whose log rebuild and verify reuse."""
    callers: int
    runtime_tasks: int
    """No-op tasks of the TaskManager end-to-end runs."""
    max_running: int
    samples: int
    """Launches of the idle latency run."""
    backlog_tasks: int
    append_events: int
    append_batches: tuple[int, ...]
    append_callers: tuple[int, ...]
    peers: tuple[str, ...]
    sweep_tasks: int
    sweep_levels: tuple[int, ...]
    replay_tasks: int
    live: int
    histories: tuple[int, ...]
    pg_tasks: int
    pg_callers: int
    pg_processes: tuple[int, ...]
    server: str
    directory: str | None
    cache: Path


def sizes(*, quick: bool, repeat: int | None, peers: tuple[str, ...], server: str,
          directory: str | None, cache: Path) -> Settings:  # fmt: skip
    """The full run's sizes, or ``quick``'s tiny ones (a smoke run: no target is judged)."""
    if quick:
        return Settings(
            quick=True, repeat=repeat or 1, lifecycle_tasks=500, callers=20,
            runtime_tasks=1000, max_running=200, samples=100, backlog_tasks=500,
            append_events=400, append_batches=(1, 10), append_callers=(1, 10), peers=peers,
            sweep_tasks=60, sweep_levels=(1, 8), replay_tasks=200, live=200,
            histories=(2_000, 20_000, 100_000), pg_tasks=100, pg_callers=8,
            pg_processes=(1, 4), server=server, directory=directory, cache=cache,
        )  # fmt: skip
    return Settings(
        quick=False, repeat=repeat or 5, lifecycle_tasks=20_000, callers=200,
        runtime_tasks=10_000, max_running=200, samples=500, backlog_tasks=5_000,
        append_events=10_000, append_batches=(1, 10, 100), append_callers=(1, 10, 100),
        peers=peers, sweep_tasks=1_000, sweep_levels=(1, 8, 64), replay_tasks=5_000,
        live=10_000, histories=(100_000, 1_000_000, 10_000_000), pg_tasks=2_000,
        pg_callers=16, pg_processes=(1, 2, 4), server=server, directory=directory, cache=cache,
    )  # fmt: skip


# -- figures ---------------------------------------------------------------------------------

DIGITS: Final = {"tasks/s": 0, "events/s": 0, "ms": 2, "s": 3, "x": 2, "MB": 1, "claims": 0}
"""Decimals shown per unit."""


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity over the repetitions."""

    label: str
    unit: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def show(self) -> str:
        """``median (min..max) unit``; the range only when there are several samples."""
        digits = DIGITS.get(self.unit, 0)
        text = f"{self.median:,.{digits}f}"
        if len(self.samples) > 1 and min(self.samples) != max(self.samples):
            text += f" ({min(self.samples):,.{digits}f}..{max(self.samples):,.{digits}f})"
        return f"{text} {self.unit}"

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "samples": list(self.samples),
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        return cls(data["label"], data["unit"], tuple(data["samples"]))


@dataclass(frozen=True, slots=True)
class Comparison:
    """A tasktrail figure beside its baseline."""

    key: str
    scenario: str
    tasktrail: Figure
    baseline: Figure

    @property
    def ratio(self) -> float:
        """tasktrail's median over the baseline's (NaN when the baseline is 0)."""
        if self.baseline.median == 0:
            return math.nan
        return self.tasktrail.median / self.baseline.median


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table: a comparison, and the target it answers, if any."""

    number: int
    """The scenario (see :data:`TITLES`)."""
    comparison: Comparison
    target: str = ""
    met: bool | None = None

    def as_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "key": c.key,
            "scenario": self.number,
            "name": c.scenario,
            "tasktrail": c.tasktrail.as_json(),
            "baseline": c.baseline.as_json(),
            "ratio": None if math.isnan(c.ratio) else c.ratio,
            "target": self.target or None,
            "met": self.met,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        comparison = Comparison(
            data["key"],
            data["name"],
            Figure.from_json(data["tasktrail"]),
            Figure.from_json(data["baseline"]),
        )
        return cls(data["scenario"], comparison, data["target"] or "", data["met"])


@dataclass(slots=True)
class Outcome:
    """What a part returns: the table's rows and the raw data for the JSON record."""

    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, dict[int, Figure]] = field(default_factory=dict)
    """Throughput by concurrency, by system (the plot's data)."""
    notes: list[str] = field(default_factory=list)
    """Lines for the reader (a part skipped, and why)."""


def rates(amount: int | Sequence[int], seconds: Sequence[float]) -> tuple[float, ...]:
    """``amount / seconds`` for every repetition (``amount`` one per repetition, or fixed)."""
    amounts = [amount] * len(seconds) if isinstance(amount, int) else list(amount)
    return tuple(n / s for n, s in zip(amounts, seconds, strict=True))


def short(count: float) -> str:
    """``1.2M``, ``20k``, ``500``."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.0f}"


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` of 1) of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def percentiles(latencies: Sequence[float]) -> str:
    """``p50 .. ms  p99 .. ms  max .. ms`` of latencies in seconds."""
    if not latencies:
        return "no samples"
    return "  ".join(
        f"{name} {percentile(latencies, fraction) * 1000:6.2f} ms"
        for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    )


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """``(seconds, result)`` of ``run()``, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def in_order(repetition: int, pair: Sequence[Any]) -> list[Any]:
    """The two sides of a pair, tasktrail first on even repetitions, the baseline first
    on odd ones."""
    return list(pair) if repetition % 2 == 0 else list(pair)[::-1]


def remove_db(path: Path) -> None:
    """A SQLite file and its ``-wal``/``-shm``/``-journal`` companions, gone."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- the record --------------------------------------------------------------------------------


def loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _filesystem(path: str) -> str:
    """The file system type holding ``path`` (from /proc/mounts), or ``"unknown"``."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1]
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _source() -> dict[str, Any]:
    """Where the measured tasktrail was imported from, its git commit and whether its
    package directory has uncommitted changes (``None`` outside a git checkout)."""
    package = Path(tasktrail.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"path": str(package), "commit": commit, "dirty": dirty}


def versions() -> dict[str, str | None]:
    """Python, SQLite and every measured package's version (``None``: not installed)."""
    found: dict[str, str | None] = {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
    }
    names = (
        "tasktrail", "msgspec", "aiosqlite", "asyncpg", "eventsourcing", "huey", "dbos",
        "sqlalchemy", "procrastinate", "psycopg", "py-spy", "pyinstrument",
    )  # fmt: skip
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(directory: str | None) -> dict[str, Any]:
    """Versions and machine notes that belong beside the figures."""
    where = directory or tempfile.gettempdir()
    return {
        "versions": versions(),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "loadavg": loadavg(),
            "bench_dir": where,
            "bench_dir_filesystem": _filesystem(where),
        },
        "tasktrail_source": _source(),
    }
