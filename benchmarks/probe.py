"""Open a TaskManager in a fresh interpreter: recovery time and resident memory.

::

    python benchmarks/probe.py PATH [--concurrency C] [--settle S]

opens ``TaskManager(PATH, max_running=C, poll_interval=0.5)`` (its
``__aenter__`` runs recovery) with no runner registered, so tasks stay where recovery
put them, and prints one JSON object:

- ``recover_s``: seconds from the call to ``__aenter__`` until it returned;
- ``rss_open_mb``: resident size right after it returned;
- ``rss_mb``: resident size after ``--settle`` seconds (default 1) with the manager open,
  its background work (notifiers catching up, the scheduler, heartbeats) running;
- ``peak_mb``: the process's peak resident size (``VmHWM``) by then;
- ``live``: tasks in ``pending``, ``starting`` or ``running`` at that moment;
- ``baseline_mb``: resident size after the imports, before the manager was made.

Run by ``run.py`` for the recovery and memory scenarios, one process per measurement, so
no figure carries another's heap or page cache.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

from common import LIVE, POLL_INTERVAL
from tasktrail import TaskManager


def _status(field: str) -> float:
    """A ``/proc/self/status`` size field, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


async def probe(path: Path, concurrency: int, settle: float) -> dict[str, float]:
    baseline = _status("VmRSS")
    manager = TaskManager(path, max_running=concurrency, poll_interval=POLL_INTERVAL)
    gc.collect()
    start = time.perf_counter()
    async with manager as tm:
        recovered = time.perf_counter() - start
        rss_open = _status("VmRSS")
        await asyncio.sleep(settle)
        live = len(await tm.store.list_tasks(state=LIVE))
        rss, peak = _status("VmRSS"), _status("VmHWM")
    return {
        "recover_s": recovered,
        "baseline_mb": baseline,
        "rss_open_mb": rss_open,
        "rss_mb": rss,
        "peak_mb": peak,
        "live": live,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="recovery time and resident size, one run")
    parser.add_argument("path", type=Path)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(probe(args.path, args.concurrency, args.settle))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
