"""Peak memory of the reading commands on a task with a large output.

::

    python benchmarks/output_memory.py                 # 200 MB of output, SQLite
    python benchmarks/output_memory.py --mb 20         # smaller
    python benchmarks/output_memory.py --postgres URL  # also on a PostgreSQL database
    python benchmarks/output_memory.py --quick         # 8 MB, for CI

Builds a database (through the store, in batches) holding one task with ``--mb`` megabytes
of output in 16 KiB ``task.output`` events (the size ``RunContext`` flushes by default)
and one task with a single line of output, then runs each reading command as a fresh
``python -m tasktrail`` process, output to /dev/null, and reads that process's peak
resident size from ``wait4`` (``ru_maxrss``). The baseline is the same command, in the
same run, on the task with one line of output: the difference is what the command keeps
of the big task's output in memory at once, and should not grow with ``--mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from tasktrail import (
    NewEvent,
    OutputAppended,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskStarted,
    open_store,
)

EVENT_BYTES: Final = 16_384
BATCH: Final = 64
COMMANDS: Final = (
    ("logs", ("logs", "{task}")),
    ("logs --json", ("logs", "{task}", "--json")),
    ("history", ("history", "{task}")),
    ("history --json", ("history", "{task}", "--json")),
    ("replay --json", ("replay", "{task}", "--json")),
    ("verify", ("verify",)),
)


async def build(database: str, megabytes: int) -> None:
    """Write the big task (``megabytes`` of output) and the small one."""
    line = ("x" * 127 + "\n") * (EVENT_BYTES // 128)
    async with open_store(database) as store:
        for task_id, events in (("big", megabytes * 2**20 // EVENT_BYTES), ("small", 1)):
            await store.append(
                task_id,
                [
                    NewEvent(TaskCreated(agent="shell", prompt="yes")),
                    NewEvent(TaskClaimed(worker_id="bench", attempt=1)),
                    NewEvent(TaskStarted(session_id="pid:1")),
                ],
                expected_version=0,
            )
            left = events
            while left:
                n = min(BATCH, left)
                text = line if task_id == "big" else "one line\n"
                await store.append(task_id, [NewEvent(OutputAppended(text=text)) for _ in range(n)])
                left -= n
            await store.append(task_id, [NewEvent(TaskCompleted(result=0))])


def peak_mb(database: str, args: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of ``python -m tasktrail *args`` on ``database``."""
    env = {**os.environ, "TASKTRAIL_DB": database}
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasktrail", *args], stdout=sink, stderr=sink, env=env
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if process.returncode not in (0,):
        raise SystemExit(f"tasktrail {' '.join(args)} exited {process.returncode}")
    return usage.ru_maxrss / 1024, elapsed


def measure(database: str, label: str) -> None:
    print(f"\n{label}")
    print(f"{'command':<16} {'big task':>12} {'1-line task':>12} {'difference':>11} {'time':>7}")
    for name, template in COMMANDS:
        if name == "verify":
            big, seconds = peak_mb(database, list(template))
            small = float("nan")
        else:
            big, seconds = peak_mb(database, [a.format(task="big") for a in template])
            small, _ = peak_mb(database, [a.format(task="small") for a in template])
        print(f"{name:<16} {big:>9.0f} MB {small:>9.0f} MB {big - small:>8.0f} MB {seconds:>6.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="megabytes of output (200)")
    parser.add_argument("--quick", action="store_true", help="8 MB of output")
    parser.add_argument("--postgres", metavar="URL", help="also measure on this database")
    parser.add_argument("--dir", default=None, help="where the SQLite database goes")
    options = parser.parse_args()
    megabytes = 8 if options.quick else options.mb
    with tempfile.TemporaryDirectory(dir=options.dir) as tmp:
        path = str(Path(tmp) / "big.db")
        started = time.perf_counter()
        asyncio.run(build(path, megabytes))
        size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        print(f"built {path}: {megabytes} MB of output, {size:.0f} MB on disk, "
              f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        measure(path, f"SQLite, {megabytes} MB of output (peak resident size, ru_maxrss)")
    if options.postgres:
        asyncio.run(build(options.postgres, megabytes))
        measure(options.postgres, f"PostgreSQL, {megabytes} MB of output")


if __name__ == "__main__":
    main()
