"""Scenario 8, upgrade: every golden database opens, upcasts and replays to its projection.

``golden/schema-N.sqlite3`` was written by the tasktrail of schema N (see
``golden/make_golden.py``) and is never changed; ``golden/schema-N.json`` holds every task
as that tasktrail's projection held it. Each later tasktrail must open the file (migrating
a copy), verify its chain, and replay the log to the very same tasks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import msgspec
import pytest
from scenario import Figures, assert_clean

from tasktrail import SQLiteEventStore
from tasktrail.projection import fold_all
from tasktrail.store._migrate import migrations

GOLDEN = Path(__file__).resolve().parent / "golden"
FILES = sorted(GOLDEN.glob("schema-*.sqlite3"))


def test_the_current_schema_has_a_golden_database() -> None:
    """A schema change comes with its golden database (run golden/make_golden.py)."""
    assert GOLDEN / f"schema-{len(migrations())}.sqlite3" in FILES


async def replay(path: Path) -> tuple[list[object], list[object], int]:
    """Open ``path``; check chain, projection and history; the tasks before and after a
    rebuild, and the number of events."""
    async with SQLiteEventStore(path) as store:
        report = await store.verify()
        assert report.append_only
        assert await store.check_projection() == []
        live = [msgspec.to_builtins(task) for task in await store.list_tasks()]
        for task in await store.list_tasks():
            history = await store.history(task.id)
            assert fold_all(history) == task
            for event in history:
                at = await store.state_at(task.id, version=event.version)
                assert at is not None
                assert at.version == event.version
        assert await store.rebuild() == len(live)
        rebuilt = [msgspec.to_builtins(task) for task in await store.list_tasks()]
        return live, rebuilt, report.events


@pytest.mark.parametrize("golden", [pytest.param(path, id=path.stem) for path in FILES])
def test_golden_database_replays_to_identical_projections(
    golden: Path, tmp_path: Path, figures: Figures
) -> None:
    """A copy of the golden file opens, verifies, and replays to the recorded tasks."""
    expected = json.loads(golden.with_suffix(".json").read_text(encoding="utf-8"))
    original = golden.read_bytes()
    path = tmp_path / golden.name
    shutil.copyfile(golden, path)
    live, rebuilt, events = asyncio.run(replay(path))
    assert live == expected
    assert rebuilt == expected
    assert_clean(path)
    assert golden.read_bytes() == original
    figures.add("8 upgrade", golden_files=1, events_replayed=events, tasks=len(expected))
