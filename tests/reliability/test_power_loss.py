"""Scenario 2, power loss: a disk that keeps only what was synced (see ``powerloss.py``).

A workload appends on a test-only storage layer (apsw with a VFS that holds unsynced
writes); every few disk operations it writes the image a disk could hold after a power
cut at that instant. Each image is then opened with the real tasktrail (stdlib sqlite3)
and checked. With ``synchronous=FULL`` no acknowledged append is ever lost; with
``NORMAL`` nothing is corrupt, and what is lost is only the most recent acknowledged
appends (those after the last sync of the WAL).

Sizes: ``TASKTRAIL_POWER_EVERY`` (cut every N disk operations; CI 2, soak 1).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checker import check
from scenario import Figures, size

from tasktrail import SQLiteEventStore

pytest.importorskip("apsw", reason="the power-loss layer is built on apsw (the test extra)")

EVERY = {"FULL": int(size("TASKTRAIL_POWER_EVERY", 2, 1)), "NORMAL": 4}
SCRIPT = Path(__file__).resolve().parent / "powerloss.py"


async def survivors(path: Path, acknowledged: list[tuple[str, int]]) -> list[bool]:
    """Open an image with tasktrail (recovering its WAL); which acknowledged appends it holds."""
    async with SQLiteEventStore(path) as store:
        await store.verify()
        assert await store.check_projection() == []
        held = []
        for task_id, version in acknowledged:
            task = await store.get_task(task_id)
            held.append(task is not None and task.version >= version)
        return held


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_power_cut_at_every_few_disk_operations(
    tmp_path: Path, synchronous: str, figures: Figures
) -> None:
    """Every power-cut image opens clean; FULL loses nothing, NORMAL only the latest appends."""
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), synchronous, str(EVERY[synchronous])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    images = lost_total = lost_max = dropped = 0
    with open(tmp_path / "manifest.jsonl") as manifest:
        lines = [json.loads(line) for line in manifest]
    for line in lines:
        image = tmp_path / line["image"]
        acknowledged = [tuple(pair) for pair in line["acknowledged"]]
        held = asyncio.run(survivors(image / "tasks.db", acknowledged))  # type: ignore[arg-type]
        report = check(image / "tasks.db")
        assert report.ok, (line["image"], report.details)
        lost = held.count(False)
        if synchronous == "FULL":
            assert lost == 0, line["image"]
        else:  # only a suffix: the most recent acknowledged appends
            assert held == [True] * (len(held) - lost) + [False] * lost, line["image"]
        images += 1
        lost_total += lost
        lost_max = max(lost_max, lost)
        dropped += line["dropped"]
        shutil.rmtree(image)
    assert images >= (300 if synchronous == "FULL" else 100)
    assert dropped > 0  # the model did drop unsynced writes
    figures.add(
        f"2 power loss {synchronous}",
        power_cuts=images,
        unsynced_writes_dropped=dropped,
        acknowledged_lost=lost_total,
        most_lost_in_one_cut=lost_max,
        corrupt=0,
    )
