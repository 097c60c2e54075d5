"""tasktrail's benchmark suite, one command: every scenario beside its same-run baseline.

::

    python benchmarks/run.py                         # everything, 5 repetitions
    python benchmarks/run.py --quick                 # every part once, tiny sizes (CI)
    python benchmarks/run.py --only runtime --only backlog --repeat 3
    python benchmarks/run.py --repeat 3 --profile --docs   # the docs' figures, plot, profiles
    python benchmarks/run.py --from-json docs/benchmark-results.json --docs  # re-render only

Writes ``results.md`` (the tables), ``results.json`` (settings, versions, machine notes
with the load average before and after, every sample, median, min..max, ratio, target and
verdict, the profiles) and ``throughput.png`` (task throughput vs concurrency) to ``--out``
(default ``benchmarks/results/``, ignored by git). ``--docs`` also writes them where the
documentation shows them: ``docs/benchmark-results.json``, ``docs/img/throughput.png``, and
the block between ``<!-- results -->`` and ``<!-- /results -->`` in ``docs/benchmarks.md``.

Parts (``--only``), in the order they run; scenario numbers as in the table:

* ``append`` (1): durable append by events per call and callers (``core.py``);
* ``core`` (2, 4, 6): the store lifecycle, rebuild and verify (``core.py``);
* ``runtime`` (2, 3): ``TaskManager`` end to end with a ``wait()`` per task and with one
  watcher; launch latency idle and under load (``runtime.py``);
* ``backlog`` (2): a backlog launched first, drained by one manager (``runtime.py``);
* ``peers`` (2, 4): 1,000 tasks at concurrency 1, 8 and 64 beside huey, eventsourcing and
  dbos; replay beside eventsourcing (``peers.py``);
* ``recovery`` (5, 6, 7): recovery at three history sizes, verify of a large log, resident
  memory (``recovery.py``, ``history.py``, ``probe.py``);
* ``postgres`` (8): PostgreSQL append and lifecycle beside procrastinate, by process
  count, claims counted (``postgres.py``); skipped with a note when the server is not
  reachable.

``--profile`` then records py-spy profiles (every thread) of the end-to-end, backlog,
concurrency 1/8/64 and idle-launch runs (``profiling.py``) and adds their top lines to the
results.
benchmarks/README.md explains every scenario, its baseline and the peers' configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import core
import peers
import postgres
import profiling
import recovery
import runtime
from common import (
    DEFAULT_SERVER,
    HERE,
    PARTS,
    PEERS,
    TITLES,
    Figure,
    Outcome,
    Row,
    Say,
    Settings,
    environment,
    loadavg,
    sizes,
)

DOCS: Final = HERE.parent / "docs"
MARK_BEGIN: Final = "<!-- results -->"
MARK_END: Final = "<!-- /results -->"
RUNNERS: Final[dict[str, Callable[[Settings, Say], Outcome]]] = {
    "append": core.part_append,
    "core": core.part_core,
    "runtime": runtime.part_runtime,
    "backlog": runtime.part_backlog,
    "peers": peers.part_peers,
    "recovery": recovery.part_recovery,
    "postgres": postgres.part_postgres,
}


# -- rendering ---------------------------------------------------------------------------------


def _verdict(row: Row, judge: bool) -> str:
    if row.met is None or not judge:
        return ""
    return "met" if row.met else "**missed**"


def _ratio(row: Row) -> str:
    ratio = row.comparison.ratio
    return "n/a" if math.isnan(ratio) else f"{ratio:.2f}"


def table(rows: Sequence[Row], *, judge: bool) -> str:
    """Every figure: median (min..max) of each side, the ratio, the target, the verdict."""
    lines = [
        "| # | Scenario | tasktrail | Baseline | Baseline figure | Ratio | Target | |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        c = row.comparison
        lines.append(
            f"| {row.number} | {c.scenario} | {c.tasktrail.show()} | {c.baseline.label} "
            f"| {c.baseline.show()} | {_ratio(row)} | {row.target} | {_verdict(row, judge)} |"
        )
    return "\n".join(lines)


def targets_table(rows: Sequence[Row], *, judge: bool) -> str:
    """The rows with a target only, in a short table."""
    lines = [
        "| Figure | tasktrail | Same-run baseline | Ratio | Target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        if not row.target:
            continue
        c = row.comparison
        lines.append(
            f"| {c.scenario} | {c.tasktrail.show()} | {c.baseline.label}: {c.baseline.show()} "
            f"| {_ratio(row)} | {row.target} | {_verdict(row, judge)} |"
        )
    return "\n".join(lines)


def sweep_table(sweep: dict[str, dict[int, Figure]]) -> str:
    levels = sorted({level for figures in sweep.values() for level in figures})
    lines = [
        "| System | " + " | ".join(f"concurrency {level}" for level in levels) + " |",
        "| --- | " + " | ".join("---:" for _ in levels) + " |",
    ]
    for system, figures in sweep.items():
        cells = [figures[level].show() if level in figures else "" for level in levels]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(sweep: dict[str, dict[int, Figure]], tasks: int, path: Path) -> None:
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


def _load(values: Sequence[float] | None) -> str:
    return "unknown" if not values else " / ".join(f"{x:.1f}" for x in values)


def preamble(result: dict[str, Any]) -> str:
    """Where, when and how loaded: the paragraph above the tables."""
    machine, v, source = result["machine"], result["versions"], result["tasktrail_source"]
    commit = (source.get("commit") or "unknown")[:7]
    dirty = " with uncommitted changes" if source.get("dirty") else ""
    before, after = machine.get("loadavg"), machine.get("loadavg_after")
    cpus = machine.get("nproc") or 1
    by_part: dict[str, list[float | None]] = machine.get("loadavg_by_part") or {}
    seen = [x for pair in by_part.values() for x in pair if x is not None]
    seen += [x[0] for x in (before, after) if x]
    busy = max(seen, default=0.0)
    parts = (
        " (1-minute load at the start and end of each part: "
        + ", ".join(
            f"{name} {_load([x for x in pair if x is not None])}" for name, pair in by_part.items()
        )
        + ")"
        if by_part
        else ""
    )
    if busy < cpus:
        load = (
            f"little else ran (a load average of at most {busy:.1f} on {cpus} CPUs, the run's "
            "own processes included)"
        )
    else:
        load = (
            f"**a shared machine: a load average of up to {busy:.1f} on {cpus} CPUs**, so other "
            "work took part of the CPU and the disk; absolute figures are lower than on a quiet "
            "machine, and the ratios to the same-run baselines are what to compare"
        )
    peers_text = ", ".join(f"{p} {v.get(p)}" for p in (*PEERS, "procrastinate") if v.get(p))
    s = result["settings"]
    return (
        f"Measured with `{result['command']}` ({s['repeat']} repetition(s), "
        f"{result['seconds_total'] / 60:.1f} minutes) at tasktrail `{commit}`{dirty} on "
        f"{machine['cpu']} ({cpus} CPUs), {machine['platform']}, files on "
        f"{machine['bench_dir_filesystem']}; Python {v['python']}, SQLite {v['sqlite']}, "
        f"msgspec {v.get('msgspec')}, aiosqlite {v.get('aiosqlite')}, asyncpg "
        f"{v.get('asyncpg')}; {peers_text}. Load average (1, 5, 15 min) {_load(before)} "
        f"before, {_load(after)} after{parts}: {load}. Median (min..max) of the "
        "repetitions; every sample is in the JSON record."
    )


def render(result: dict[str, Any]) -> str:
    """The Markdown of a run: preamble, targets, every figure, throughput by concurrency,
    notes, profiles."""
    rows = [Row.from_json(r) for r in result["figures"]]
    judge = not result["settings"]["quick"]
    parts = [preamble(result)]
    if not judge:
        parts.append("Quick mode: sizes too small to judge the targets.")
    parts += ["### Targets", targets_table(rows, judge=judge)]
    parts += ["### Every figure", table(rows, judge=judge)]
    parts.append(
        "Scenarios: " + "; ".join(f"{n} {title.lower()}" for n, title in TITLES.items()) + "."
    )
    sweep = _sweep(result)
    if sweep:
        s = result["settings"]
        parts += [
            "### Task throughput by concurrency",
            f"{s['sweep_tasks']:,} no-op tasks, tasks/s, median (min..max) of {s['repeat']}:",
            sweep_table(sweep),
        ]
    for note in result.get("notes", []):
        parts.append(f"Note: {note}")
    return "\n\n".join(parts)


def render_profiles(result: dict[str, Any], *, top: int = profiling.TOP) -> str:
    """The profiles' top lines, a text block each."""
    profiles = result.get("profiles") or {}
    if not profiles:
        return ""
    blocks = [
        "### Profiles",
        f"The top {top} lines of each profile (`run.py --profile`; the raw samples and "
        "longer lists are in the results directory):",
    ]
    for profile in profiles.values():
        lines = profiling.top_lines(profile, top=top)
        blocks.append("```text\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(blocks)


def _sweep(result: dict[str, Any]) -> dict[str, dict[int, Figure]]:
    return {
        system: {int(level): Figure.from_json(f) for level, f in levels.items()}
        for system, levels in (result.get("sweep") or {}).items()
    }


def write(result: dict[str, Any], out: Path, *, docs: bool) -> str:
    """Write the record, the tables and the plot to ``out`` (and, with ``docs``, to the
    documentation); return the tables' Markdown."""
    text = render(result)
    profiles = render_profiles(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + ("\n\n" + profiles if profiles else "") + "\n")
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    sweep = _sweep(result)
    tasks = result["settings"]["sweep_tasks"]
    if sweep:
        plot(sweep, tasks, out / "throughput.png")
    if docs:
        (DOCS / "benchmark-results.json").write_text(
            json.dumps(result, indent=2, default=str) + "\n"
        )
        image = ""
        if sweep:
            plot(sweep, tasks, DOCS / "img" / "throughput.png")
            image = "\n\n![Task throughput vs concurrency](img/throughput.png)"
        brief = render_profiles(result, top=8)
        block = (
            text + image + ("\n\n" + brief if brief else "")
            + "\n\nThe full record, with every sample: "
            "[benchmark-results.json](benchmark-results.json)."
        )  # fmt: skip
        page = DOCS / "benchmarks.md"
        old = page.read_text()
        pattern = re.compile(re.escape(MARK_BEGIN) + r".*?" + re.escape(MARK_END), re.DOTALL)
        if not pattern.search(old):
            raise SystemExit(f"{page} has no {MARK_BEGIN} ... {MARK_END} block to replace")
        page.write_text(pattern.sub(lambda _: f"{MARK_BEGIN}\n{block}\n{MARK_END}", old))
    return text


# -- the command line ------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="tasktrail's benchmark suite: every scenario beside its same-run baseline."
    )
    parser.add_argument("--quick", action="store_true", help="every part once, tiny sizes (CI)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5; --quick: 1)")
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only these parts (repeatable)"
    )
    parser.add_argument(
        "--skip-peer", action="append", choices=PEERS, help="leave a peer out (repeatable)"
    )
    parser.add_argument("--dir", help="where the working databases go (default: temp dir)")
    parser.add_argument(
        "--cache",
        type=Path,
        help="where the large recovery logs are built and kept between runs "
        "(default: <temp dir>/tasktrail-bench-cache)",
    )
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help="PostgreSQL admin URL (the postgres part)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="where results.md/json and the plot go"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="also write docs/benchmark-results.json, docs/img/throughput.png and the results "
        "block of docs/benchmarks.md",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record profiles (py-spy, every thread) of the runtime scenarios: "
        + ", ".join(profiling.SCENARIOS),
    )
    parser.add_argument(
        "--profile-only",
        action="append",
        choices=profiling.SCENARIOS,
        help="profile only these scenarios (repeatable; implies --profile)",
    )
    parser.add_argument(
        "--profile-tool",
        choices=("py-spy", "pyinstrument"),
        default="py-spy",
        help="pyinstrument sees only the event loop's thread (no ptrace needed)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="measure nothing: render the tables, plot (and --docs) from a results.json",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        print(write(result, args.out, docs=args.docs))
        return 0
    s = sizes(
        quick=args.quick, repeat=args.repeat,
        peers=tuple(p for p in PEERS if p not in (args.skip_peer or [])),
        server=args.server, directory=args.dir,
        cache=args.cache or Path(tempfile.gettempdir(), "tasktrail-bench-cache"),
    )  # fmt: skip
    context = environment(s.directory)
    machine = context["machine"]
    if machine["bench_dir_filesystem"] in ("tmpfs", "ramfs"):
        print(
            f"warning: {machine['bench_dir']} is {machine['bench_dir_filesystem']}: fsync is "
            "free there, so durable figures mean little; pass --dir on a real disk",
            file=sys.stderr,
        )
    print(
        f"tasktrail benchmark suite{' (quick)' if s.quick else ''}: {s.repeat} repetition(s); "
        f"python {context['versions']['python']}, sqlite {context['versions']['sqlite']}, "
        f"{machine['nproc']} CPUs, load average {_load(machine['loadavg'])}, files on "
        f"{machine['bench_dir_filesystem']}; peers: {', '.join(s.peers) or 'none'}",
        flush=True,
    )

    def say(line: str) -> None:
        print(f"  {line}", flush=True)

    started = time.perf_counter()
    rows: list[Row] = []
    samples: dict[str, Any] = {}
    durations: dict[str, float] = {}
    sweep: dict[str, dict[int, Figure]] = {}
    notes: list[str] = []
    for name in PARTS:
        if args.only and name not in args.only:
            continue
        print(f"\n== {name}", flush=True)
        begun = time.perf_counter()
        load_before = loadavg()
        outcome = RUNNERS[name](s, say)
        durations[name] = time.perf_counter() - begun
        machine.setdefault("loadavg_by_part", {})[name] = [
            load_before[0] if load_before else None,
            (loadavg() or [None])[0],
        ]
        rows.extend(outcome.rows)
        sweep.update(outcome.sweep)
        notes.extend(outcome.notes)
        samples[name] = outcome.data
    rows.sort(key=lambda row: row.number)
    machine["loadavg_after"] = loadavg()
    profiles: dict[str, Any] = {}
    if args.profile or args.profile_only:
        print("\n== profiles", flush=True)
        chosen = args.profile_only or list(profiling.SCENARIOS)
        profiles = profiling.record(s, chosen, args.profile_tool, args.out, say)
    result = {
        "benchmark": "suite",
        "command": " ".join(["python", *sys.argv]),
        "settings": dataclasses.asdict(s),
        "durability": {"tasktrail": {"synchronous": "FULL", "journal_mode": "WAL"}},
        **context,
        "seconds_per_part": durations,
        "seconds_total": time.perf_counter() - started,
        "figures": [row.as_json() for row in rows],
        "sweep": {
            system: {str(level): f.as_json() for level, f in levels.items()}
            for system, levels in sweep.items()
        },
        "notes": notes,
        "samples": samples,
        "profiles": profiles,
    }
    text = write(result, args.out, docs=args.docs)
    print(f"\n{text}\n")
    for profile in profiles.values():
        print("\n".join(profiling.top_lines(profile)) + "\n")
    print(
        f"(the whole run took {result['seconds_total']:.0f} s; load average "
        f"{_load(machine['loadavg'])} before, {_load(machine['loadavg_after'])} after)\n"
        f"wrote {args.out / 'results.md'}, {args.out / 'results.json'}"
        + (f", {args.out / 'throughput.png'}" if sweep else "")
        + (" and the docs' copies" if args.docs else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
