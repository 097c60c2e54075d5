"""Profiles of the runtime scenarios, every thread included (``run.py --profile``).

Each scenario's tasktrail side runs alone in a child process (this file) under py-spy,
which samples every thread of the process from outside, the store's writer thread and
aiosqlite's reader thread as well as the event loop's (an in-process profiler such as
pyinstrument sees only the thread it runs on, so it would miss the writer thread, where
every SQLite write of a batch runs). Nothing is timed: a profile explains a figure; the
figure comes from the measured run.

Scenarios: ``wait`` (the end-to-end run with a ``wait()`` per task), ``backlog`` (a
manager draining tasks launched beforehand; the launches are made before the profiled
process starts), ``c1`` (1,000 tasks at ``max_running=1`` with one watcher, as the peer
sweep runs it), ``c8`` and ``c64`` (the same with 5,000 tasks at 8 and 64: 1,000 take too
short a time to sample), ``idle`` (2,000 launches one after another on an idle client, as
the idle latency run makes them), ``postgres`` (the PostgreSQL lifecycle run with 4 worker
processes: the first of them is sampled, and the server's backends are sampled in
``pg_stat_activity``). Sampling starts once the child has imported everything and prepared
its database.

The raw samples (py-spy's collapsed stacks, ``profile-<scenario>.txt`` in ``--out``) are
summed per thread: the share of samples each thread spent waiting (its deepest frame a
selector, a queue or a lock), the lines that were on top of the stack most often ("self",
by line: on the writer thread the ``COMMIT`` line is the fsync), and the functions that
were anywhere on the stack most often ("total", counted once per sample).

With ``--profile-tool pyinstrument`` the child profiles its event loop's thread in process
instead (no ptrace needed), and the summary is pyinstrument's own text, cut short.

Child entry: ``python benchmarks/profiling.py SCENARIO PATH --tasks N [--pyinstrument OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

from common import Say, Settings, remove_db

HERE: Final = Path(__file__).resolve()
SCENARIOS: Final = ("wait", "backlog", "c1", "c8", "c64", "idle", "postgres")
RATE: Final = 250
"""Samples per second per thread."""
TOP: Final = 12
IDLE: Final = re.compile(
    r"(^|\.)(select \(selectors\.py|_worker \(concurrent/futures/thread\.py|"
    r"wait \(threading\.py|get \(queue\.py|_wait_for_tstate_lock \(threading\.py|"
    r"_connection_worker_thread \(aiosqlite/core\.py:59\))"
)
"""The deepest frame of a thread that waits for work: the event loop in its selector, an
idle pool thread (the store's writer between batches), aiosqlite's thread at its queue, a
thread blocked on a lock."""
FRAME: Final = re.compile(
    r"\((threading\.py|concurrent/futures/thread\.py|asyncio/runners\.py|profiling\.py)"
    r"|BaseEventLoop\.(run_forever|_run_once|run_until_complete) |Handle\._run "
    r"|_connection_worker_thread "
)
"""Frames on nearly every stack of their thread (the loop's and the threads' machinery),
left out of the "total" lists."""


def _workload(scenario: str, path: Path, tasks: int, max_running: int) -> Coroutine[Any, Any, Any]:
    import runtime

    if scenario == "wait":
        return runtime.end_to_end(path, tasks, max_running, watch=False, probe=False)
    if scenario in ("c1", "c8", "c64"):
        return runtime.end_to_end(path, tasks, max_running, watch=True, probe=False)
    if scenario == "idle":
        return runtime.idle_launches(path, tasks)
    if scenario == "backlog":
        db = sqlite3.connect(path)
        try:
            ids = [row[0] for row in db.execute("SELECT id FROM tasks WHERE state = 'pending'")]
        finally:
            db.close()
        return runtime.drain(path, ids, max_running)
    raise SystemExit(f"unknown scenario {scenario}")


def _sizes(s: Settings, scenario: str) -> tuple[int, int]:
    """(tasks, max_running) of a scenario's profiled run (for ``idle``: launches)."""
    if scenario == "backlog":
        return s.backlog_tasks, s.max_running
    if scenario == "c1":
        return s.sweep_tasks, 1
    if scenario in ("c8", "c64"):  # 1,000 tasks at 8 or 64 take too short a time to sample
        return 5 * s.sweep_tasks, int(scenario[1:])
    if scenario == "idle":
        return 4 * s.samples, 1
    if scenario == "postgres":
        return s.pg_tasks, s.pg_callers
    return s.runtime_tasks, s.max_running


# -- reading py-spy's samples --------------------------------------------------------------------


def _function(frame: str) -> str:
    """``name (file:line)`` without the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})"


def summarize(raw: Path) -> dict[str, Any]:
    """Per thread: samples, the share waiting, the top lines (self) and functions (total)."""
    threads: dict[str, Counter[str]] = {}
    totals: dict[str, Counter[str]] = {}
    samples: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        label, *frames = stack.split(";")
        name = label.split(": ", 1)[-1]
        samples[name] += count
        leaf = frames[-1] if frames else "(no Python frame)"
        if IDLE.search(leaf):
            waiting[name] += count
            continue
        threads.setdefault(name, Counter())[leaf] += count
        seen = {_function(frame) for frame in frames if not FRAME.search(frame)}
        totals.setdefault(name, Counter()).update(dict.fromkeys(seen, count))
    summary: dict[str, Any] = {"samples": sum(samples.values()), "rate": RATE, "threads": []}
    for name, n in samples.most_common():
        busy = threads.get(name, Counter())
        summary["threads"].append(
            {
                "name": name,
                "samples": n,
                "seconds": n / RATE,
                "waiting": waiting[name] / n,
                "self": [(c / n, frame) for frame, c in busy.most_common(TOP)],
                "total": [(c / n, f) for f, c in totals.get(name, Counter()).most_common(TOP)],
            }
        )
    return summary


def top_lines(profile: dict[str, Any], *, top: int = TOP) -> list[str]:
    """The summary as text: a block per thread that did something (the ``top`` lines of
    each list; a thread busy less than a tenth of the time gets its one line only)."""
    if "text" in profile:
        return list(profile["text"])
    lines = [
        f"{profile['scenario']}: {profile['tool']}, {profile['samples']:,} samples at "
        f"{profile['rate']} Hz per thread over {profile['seconds']:.1f} s "
        f"(the run: {profile['tasks']:,} tasks)"
    ]
    if profile.get("server"):
        lines.append(
            f"the server: {profile['backends']:.1f} backends on average (the connections of "
            f"{profile['processes']} worker processes and the parent's poller), "
            f"{profile['server_idle']:.0%} of their samples idle outside a transaction; "
            "the rest (pg_stat_activity every 10 ms):"
        )
        lines.extend(f"    {share:6.1%}  {what}" for share, what in profile["server"][:top])
        lines.append("worker 1 of them, sampled by py-spy:")
    for thread in profile["threads"]:
        busy = 1 - thread["waiting"]
        if busy * thread["seconds"] < 0.05:
            continue
        lines.append(
            f"thread {thread['name']}: {thread['seconds']:.1f} s sampled, "
            f"{busy:.0%} busy, {thread['waiting']:.0%} waiting for work"
        )
        if busy < 0.1:
            continue
        lines.append("  self (top of the stack), share of the thread's samples:")
        lines.extend(f"    {share:6.1%}  {frame}" for share, frame in thread["self"][:top])
        lines.append("  total (anywhere on the stack):")
        lines.extend(f"    {share:6.1%}  {frame}" for share, frame in thread["total"][:top])
    return lines


# -- running -------------------------------------------------------------------------------------


def _prepare(s: Settings, scenario: str, path: Path) -> None:
    remove_db(path)
    if scenario == "backlog":
        import runtime

        asyncio.run(runtime.launch_backlog(path, s.backlog_tasks))


def _spy(spy: str, child: list[str], raw: Path) -> subprocess.CompletedProcess[str]:
    """Run ``child``; once it is ready (imports done, its database prepared), attach py-spy
    to it, wait until py-spy samples, then let the child run its workload to its end."""
    proc = subprocess.Popen(child, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the profiled process failed to start")
        command = [spy, "record", "--pid", str(proc.pid), "--rate", str(RATE), "--threads",
                   "--idle", "--format", "raw", "--output", str(raw)]  # fmt: skip
        sampler = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert sampler.stdout is not None
        said = []
        for line in sampler.stdout:  # "py-spy> Sampling process 250 times a second ..."
            said.append(line)
            if "Sampling" in line:
                break
        else:
            raise RuntimeError(f"py-spy did not attach: {''.join(said)[-800:]}")
        proc.stdin.write("go\n")
        proc.stdin.close()
        proc.wait()
        said.append(sampler.stdout.read())
        sampler.wait()
        return subprocess.CompletedProcess(command, proc.returncode, "", "".join(said))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _spy_on(spy: str, pid: int, raw: Path) -> asyncio.subprocess.Process:
    """py-spy recording ``pid`` into ``raw``, once it samples (it ends with the process)."""
    sampler = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", str(RATE), "--threads", "--idle",
        "--format", "raw", "--output", str(raw), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert sampler.stdout is not None
    while line := await sampler.stdout.readline():
        if b"Sampling" in line:
            return sampler
    raise RuntimeError("py-spy did not attach")


def _server(activity: Counter[str]) -> dict[str, Any]:
    """``pg_stat_activity`` samples as shares: backends on average, the share idle, and
    the rest's states as shares of the non-idle samples."""
    import postgres

    looks = activity.pop(postgres.TICKS, 0) or 1
    idle = activity.pop("idle (no transaction)", 0)
    busy = sum(activity.values()) or 1
    return {
        "backends": (busy + idle) / looks,
        "server_idle": idle / ((busy + idle) or 1),
        "server": [(n / busy, what) for what, n in activity.most_common(TOP)],
    }


def _spy_postgres(
    s: Settings, spy: str, raw: Path, server: Counter[str]
) -> subprocess.CompletedProcess[str]:
    """The PostgreSQL lifecycle with the most worker processes, the first one sampled by
    py-spy; ``server`` receives what the server's backends were doing meanwhile."""
    import postgres

    why = postgres.reachable(s.server)
    if why is not None:
        return subprocess.CompletedProcess([], 1, "", why)
    samplers: list[asyncio.subprocess.Process] = []

    async def attach(pids: list[int]) -> None:
        samplers.append(await _spy_on(spy, pids[0], raw))

    async def run() -> None:
        _, activity = await postgres.profile_lifecycle(s, max(s.pg_processes), attach)
        server.update(activity)
        for sampler in samplers:
            await sampler.communicate()

    asyncio.run(run())
    return subprocess.CompletedProcess([], 0, "", "")


def record(s: Settings, scenarios: Sequence[str], tool: str, out: Path, say: Say) -> dict[str, Any]:
    """Profile each of ``scenarios``; the summaries by scenario (raw files in ``out``)."""
    found: dict[str, Any] = {}
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if tool == "py-spy" and not Path(spy).exists():
        say("py-spy is not installed (pip install -e '.[bench]'): no profiles")
        return found
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tasktrail-profile-", dir=s.directory) as tmp:
        for scenario in scenarios:
            path = Path(tmp, f"{scenario}.db")
            _prepare(s, scenario, path)
            tasks, max_running = _sizes(s, scenario)
            raw = out / f"profile-{scenario}.txt"
            raw.unlink(missing_ok=True)
            child = [sys.executable, str(HERE), scenario, str(path), "--tasks", str(tasks),
                     "--max-running", str(max_running)]  # fmt: skip
            began = time.perf_counter()
            server: Counter[str] = Counter()
            if scenario == "postgres":
                if tool != "py-spy":
                    continue  # its workers are other processes: py-spy only
                done = _spy_postgres(s, spy, raw, server)
            elif tool == "py-spy":
                done = _spy(spy, child, raw)
            else:
                command = [*child, "--pyinstrument", str(raw)]
                done = subprocess.run(
                    command, input="go\n", capture_output=True, text=True, check=False
                )
            seconds = time.perf_counter() - began
            if done.returncode != 0 or not raw.exists():
                say(f"profile of {scenario} failed: {(done.stderr or done.stdout)[-800:]}")
                continue
            profile: dict[str, Any] = {
                "scenario": scenario, "tool": tool, "tasks": tasks, "max_running": max_running,
                "seconds": seconds, "raw": str(raw),
            }  # fmt: skip
            if tool == "py-spy":
                profile.update(summarize(raw))
            else:
                profile["text"] = raw.read_text().splitlines()[:60]
            if server:
                profile["processes"] = max(s.pg_processes)
                profile.update(_server(server))
            found[scenario] = profile
            for line in top_lines(profile)[:1]:
                say(line)
            remove_db(path)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """The child: run one scenario's tasktrail side (optionally under pyinstrument)."""
    parser = argparse.ArgumentParser(description="one profiled run (see run.py --profile)")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("path", type=Path)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--max-running", type=int, default=200)
    parser.add_argument("--pyinstrument", type=Path, help="profile in process, text to here")
    args = parser.parse_args(argv)
    work = _workload(args.scenario, args.path, args.tasks, args.max_running)
    print("ready", flush=True)
    sys.stdin.readline()  # the profiler is attached
    if args.pyinstrument is None:
        asyncio.run(work)
        return 0
    from pyinstrument import Profiler

    with Profiler(interval=1 / RATE, async_mode="disabled") as profiler:
        asyncio.run(work)
    args.pyinstrument.write_text(profiler.output_text(unicode=False, color=False, short_mode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
