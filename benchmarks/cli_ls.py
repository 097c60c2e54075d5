"""`tasktrail ls` on a log of 1M events: one page costs what it costs on a small log.

Two logs are built with ``history.py`` (finished tasks of four events each, written
straight into the real schema): about 10,000 and 1,000,000 events (2,500 and 250,000
tasks). On each, every figure is the median of ``--repeat`` runs, beside a baseline that
does the same essential work with the standard library in the same run:

* ``ls`` (first page): the whole command in this process (click's runner: open the store,
  read 50 tasks newest first, count what follows up to 10,000, draw the table at 160
  columns) vs stdlib ``sqlite3``: connect, the same 50 rows by the same index, decode each
  record with ``json``;
* ``ls --cursor`` (a page deep in the log, the 2,000th page on the big log): the same
  command continuing after a task in the middle vs the raw keyset query;
* ``ls --json`` of a page, and ``stats`` (aggregates over the task index: its cost grows
  with the number of tasks, never with the events);
* the log's size per task and per event (how big the log grows).

    python benchmarks/cli_ls.py               # about 1 minute, the 1M log built once
    python benchmarks/cli_ls.py --quick       # tiny logs, one run (CI)

Speed claims only: the tests check the behaviour (``tests/cli/test_listing.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import cached
from tasktrail.cli import main

PAGE = 50


def _median_ms(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, min) milliseconds of ``repeat`` runs, after one run to warm up."""
    run()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, min(times) * 1000


def _command(db: Path, *args: str) -> Callable[[], object]:
    def run() -> object:
        result = CliRunner().invoke(main, ["--db", str(db), *args], env={"COLUMNS": "160"})
        if result.exit_code != 0:
            raise RuntimeError(f"ls {args} failed: {result.stderr}")
        return result.stdout

    return run


def _raw_page(db: Path, after: tuple[float, int] | None) -> Callable[[], object]:
    def run() -> object:
        conn = sqlite3.connect(db)
        try:
            if after is None:
                rows = conn.execute(
                    "SELECT record FROM tasks ORDER BY created_at DESC, rowid DESC LIMIT ?",
                    (PAGE,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT record FROM tasks WHERE created_at <= ? AND (created_at < ? OR "
                    "rowid < ?) ORDER BY created_at DESC, rowid DESC LIMIT ?",
                    (after[0], after[0], after[1], PAGE),
                ).fetchall()
            return [json.loads(row[0]) for row in rows]
        finally:
            conn.close()

    return run


def measure(db: Path, events: int, repeat: int) -> dict[str, Any]:
    """Every figure on one log."""
    conn = sqlite3.connect(db)
    tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    middle_id, created, rowid = conn.execute(
        "SELECT id, created_at, rowid FROM tasks ORDER BY created_at DESC, rowid DESC "
        "LIMIT 1 OFFSET ?",
        (tasks // 2,),
    ).fetchone()
    conn.close()
    size = os.path.getsize(db)
    return {
        "events": events,
        "tasks": tasks,
        "ls": _median_ms(_command(db, "ls"), repeat),
        "ls raw": _median_ms(_raw_page(db, None), repeat),
        "ls --cursor": _median_ms(_command(db, "ls", "--cursor", middle_id), repeat),
        "ls --cursor raw": _median_ms(_raw_page(db, (created, rowid)), repeat),
        "ls --json": _median_ms(_command(db, "ls", "--json"), repeat),
        "stats": _median_ms(_command(db, "stats", "--json"), repeat),
        "bytes/task": size / tasks,
        "bytes/event": size / events,
    }


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny logs, one run (CI)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure [7]")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "tasktrail-bench-cache",
        help="where the logs are built once and kept",
    )  # fmt: skip
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 7)
    sizes = (2_000, 20_000) if args.quick else (10_000, 1_000_000)
    results = []
    load = os.getloadavg()
    for size in sizes:
        path, events, built = cached(args.cache, history=size, live=0)
        if built:
            print(f"built a log of {events:,} events in {built:.1f} s: {path}", flush=True)
        results.append(measure(path, events, repeat))
    small, big = results
    print(f"\nmedian (min) of {repeat} runs, ms; the raw baseline is stdlib sqlite3 + json")
    print(f"load average before: {load[0]:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"{'figure':<20}{small['events']:>16,} ev{big['events']:>16,} ev{'big/small':>11}")
    for name in ("ls", "ls raw", "ls --cursor", "ls --cursor raw", "ls --json", "stats"):
        (a, a_min), (b, b_min) = small[name], big[name]
        print(f"{name:<20}{a:>11.1f} ({a_min:5.1f}){b:>11.1f} ({b_min:5.1f}){b / a:>11.2f}")
    for name in ("bytes/task", "bytes/event"):
        print(f"{name:<20}{small[name]:>19.0f}{big[name]:>19.0f}")
    print(
        f"\nls: one page of {PAGE} on {big['events']:,} events costs "
        f"{big['ls'][0] / small['ls'][0]:.2f}x what it costs on {small['events']:,} (min: "
        f"{big['ls'][1] / small['ls'][1]:.2f}x); a page deep in the log "
        f"{big['ls --cursor'][0] / small['ls --cursor'][0]:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main_())
