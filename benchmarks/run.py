"""The whole benchmark suite in one command: seven scenarios, each beside its baseline.

::

    python benchmarks/run.py            # the full suite (about 8 minutes, 11 the first time)
    python benchmarks/run.py --quick    # every scenario once with tiny sizes (CI)

Writes ``results.md`` (the table) and ``results.json`` (versions, machine notes, every
sample, median, min..max, ratio and target) to ``--out`` (default
``benchmarks/results/``, ignored by git), and the throughput-vs-concurrency plot to
``--plot`` (default ``docs/img/throughput.png``; ``--quick`` puts it in ``--out``).
benchmarks/README.md explains every scenario, its baseline and the peers' configuration.

Scenarios
---------

1. durable append throughput vs events per append and concurrent callers, beside raw
   ``sqlite3`` writing the same rows, one commit per round of callers (the ceiling);
2. the task lifecycle: through the store (``core.py``) and through ``TaskManager`` end to
   end (``runtime.py``), beside the raw batched ceiling; and task throughput against the
   peers (``peers.py``: eventsourcing, huey, dbos) at several concurrencies;
3. launch-to-durable latency, p50 / p99, idle and under load, beside one raw commit;
4. projection rebuild, beside raw read + decode + fold and eventsourcing's notification
   log folded the same way;
5. recovery of the live tasks at three history sizes (``history.py`` builds and caches the
   logs, ``probe.py`` opens each in a fresh process), beside a raw recovery;
6. hash-chain verification, beside sqlite3 + hashlib over the same bytes;
7. resident memory of that fresh process, by number of finished tasks in the log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import core
import suite
from suite import Outcome, Row, Settings

HERE: Final = Path(__file__).resolve().parent
SCENARIOS: Final = ("append", "core", "runtime", "peers", "recovery")
PEERS: Final = ("eventsourcing", "huey", "dbos")
TITLES: Final = {
    1: "Durable append",
    2: "Lifecycle",
    3: "Launch latency",
    4: "Rebuild and replay",
    5: "Recovery",
    6: "Verification",
    7: "Memory",
}


def settings(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    cache = args.cache or Path(tempfile.gettempdir(), "tasktrail-bench-cache")
    peers = tuple(p for p in PEERS if p not in (args.skip_peer or []))
    if quick:
        return Settings(
            quick=True, repeat=args.repeat or 1, lifecycle_tasks=500, callers=20,
            runtime_tasks=1000, max_running=200, samples=100, append_events=400,
            append_batches=(1, 10), append_callers=(1, 10), peers=peers, sweep_tasks=60,
            sweep_levels=(1, 8), replay_tasks=200, live=200,
            histories=(2_000, 20_000, 100_000), directory=args.dir, cache=cache,
        )  # fmt: skip
    return Settings(
        quick=False, repeat=args.repeat or 5, lifecycle_tasks=20_000, callers=200,
        runtime_tasks=10_000, max_running=200, samples=500, append_events=10_000,
        append_batches=(1, 10, 100), append_callers=(1, 10, 100), peers=peers,
        sweep_tasks=1_000, sweep_levels=(1, 8, 64), replay_tasks=5_000, live=10_000,
        histories=(100_000, 1_000_000, 10_000_000), directory=args.dir, cache=cache,
    )  # fmt: skip


def versions() -> dict[str, str | None]:
    names = ("tasktrail", "msgspec", "aiosqlite", "eventsourcing", "huey", "dbos", "sqlalchemy")
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    found["sqlite"] = sqlite3.sqlite_version
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def table(rows: Sequence[Row], *, judge: bool = True) -> str:
    """The results as Markdown: median (min..max) of each side, the ratio and the target."""
    lines = [
        "| # | Scenario | tasktrail | Baseline | Baseline figure | Ratio | Target |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for row in rows:
        c = row.comparison
        verdict = "" if row.met is None or not judge else (" (met)" if row.met else " (**missed**)")
        lines.append(
            f"| {row.number} | {c.scenario} | {c.tasktrail.show()} | {c.baseline.label} "
            f"| {c.baseline.show()} | {c.ratio:.2f} | {row.target}{verdict} |"
        )
    return "\n".join(lines)


def sweep_table(sweep: dict[str, dict[int, core.Figure]]) -> str:
    levels = sorted({level for figures in sweep.values() for level in figures})
    lines = [
        "| System | " + " | ".join(f"concurrency {level}" for level in levels) + " |",
        "| --- | " + " | ".join("---:" for _ in levels) + " |",
    ]
    for system, figures in sweep.items():
        cells = [figures[level].show() if level in figures else "" for level in levels]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(sweep: dict[str, dict[int, core.Figure]], tasks: int, path: Path) -> None:
    """Throughput vs concurrency, one line per system, median with min..max bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for system, figures in sweep.items():
        levels = sorted(figures)
        medians = [figures[level].median for level in levels]
        low = [m - min(figures[lv].samples) for m, lv in zip(medians, levels, strict=True)]
        high = [max(figures[lv].samples) - m for m, lv in zip(medians, levels, strict=True)]
        axes.errorbar(
            levels, medians, yerr=[low, high], marker="o", capsize=3, label=system,
            linewidth=2.5 if system == "tasktrail" else 1.5,
        )  # fmt: skip
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("concurrency (max_running / worker threads / queue concurrency)")
    axes.set_ylabel("tasks per second (durable, no-op task)")
    axes.set_title(f"Task throughput vs concurrency, {tasks:,} tasks, SQLite synchronous=FULL")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="tasktrail's benchmark suite: seven scenarios beside their baselines."
    )
    parser.add_argument("--quick", action="store_true", help="every scenario once, tiny sizes")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5; --quick: 1)")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only these parts (repeatable)"
    )
    parser.add_argument(
        "--skip-peer", action="append", choices=PEERS, help="leave a peer out (repeatable)"
    )
    parser.add_argument(
        "--dir", help="where the working database files go (default: the system temp dir)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="where the large recovery logs are built and kept between runs "
        "(default: <temp dir>/tasktrail-bench-cache)",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="where results.md/json go"
    )
    parser.add_argument("--plot", type=Path, help="where the PNG goes")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    s = settings(args)
    plot_path = args.plot or (
        args.out / "throughput.png" if s.quick else HERE.parent / "docs" / "img" / "throughput.png"
    )
    context = core.environment(core.Config(1, 1, s.repeat, s.directory, None))
    context["versions"] = versions()
    machine = context["machine"]
    if machine["bench_dir_filesystem"] in ("tmpfs", "ramfs"):
        print(
            f"warning: {machine['bench_dir']} is {machine['bench_dir_filesystem']}: fsync is "
            "free there, so durable figures mean little; pass --dir on a real disk",
            file=sys.stderr,
        )
    print(
        f"tasktrail benchmark suite{' (quick)' if s.quick else ''}: {s.repeat} repetition(s); "
        f"python {context['versions']['python']}, sqlite {sqlite3.sqlite_version}, "
        f"{machine['nproc']} CPUs, load average {machine['loadavg']}, files on "
        f"{machine['bench_dir_filesystem']}; peers: {', '.join(s.peers) or 'none'}",
        flush=True,
    )
    parts: dict[str, Callable[[Settings, suite.Say], Outcome]] = {
        "append": suite.scenario_append,
        "core": suite.scenario_core,
        "runtime": suite.scenario_runtime,
        "peers": suite.scenario_peers,
        "recovery": suite.scenario_recovery,
    }
    started = time.perf_counter()
    rows: list[Row] = []
    data: dict[str, Any] = {}
    durations: dict[str, float] = {}
    sweep: dict[str, dict[int, core.Figure]] = {}
    for name, part in parts.items():
        if args.only and name not in args.only:
            continue
        print(f"\n== {name}", flush=True)
        begun = time.perf_counter()
        outcome = part(s, lambda line: print(f"  {line}", flush=True))
        durations[name] = time.perf_counter() - begun
        rows.extend(outcome.rows)
        sweep = outcome.data.pop("sweep_figures", sweep)
        data[name] = outcome.data
    rows.sort(key=lambda row: row.number)
    elapsed = time.perf_counter() - started
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    text = table(rows, judge=not s.quick)
    if s.quick:
        text = "Quick mode: sizes too small to judge the targets.\n\n" + text
    if sweep:
        text += (
            f"\n\nTask throughput by concurrency ({s.sweep_tasks:,} no-op tasks, tasks/s, "
            f"median (min..max) of {s.repeat}):\n\n{sweep_table(sweep)}"
        )
        plot(sweep, s.sweep_tasks, plot_path)
    print(f"\n{text}\n\n(the whole run took {elapsed:.0f} s; load average at the end "
          f"{machine['loadavg_after']})")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    result = {
        "benchmark": "suite",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": dataclasses.asdict(s),
        "durability": {"tasktrail": {"synchronous": "FULL", "journal_mode": "WAL"}},
        **context,
        "seconds_per_part": durations,
        "seconds_total": elapsed,
        "figures": [row.as_json() for row in rows],
        "samples": data,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'results.md'}, {args.out / 'results.json'}" + (
        f" and {plot_path}" if sweep else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
