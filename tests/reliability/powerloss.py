"""A test-only storage layer that loses what was not synced, and a workload that runs on it.

Run as a script (by ``test_power_loss.py``)::

    python powerloss.py DIRECTORY SYNCHRONOUS EVERY

The store's driver is swapped for apsw on a VFS that models the disk: every write and
truncation goes to the real file (so SQLite reads what it wrote, as from the OS cache) and
is also held as *pending* until the file is synced, when it becomes *durable*. Every
``EVERY``-th disk operation, before it runs, the power is "cut": the image a disk could
hold after a power loss (the durable bytes plus a random subset of the pending writes, in
order) is written to ``DIRECTORY/image-N/``, with the appends acknowledged so far in
``DIRECTORY/manifest.jsonl``. The workload goes on; the test then opens every image with
the real tasktrail and checks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import apsw

import tasktrail.store.sqlite as sqlite_store
from tasktrail import NewEvent, SQLiteEventStore, TaskClaimed, TaskCreated, TaskStarted

Op = tuple[str, int, bytes]  # ("w", offset, data) or ("t", size, b"")


class Disk:
    """Per file: the durable bytes and the operations since the last sync."""

    def __init__(self, out: Path, every: int, seed: int) -> None:
        self.lock = threading.RLock()
        self.durable: dict[str, bytearray] = {}
        self.pending: dict[str, list[Op]] = {}
        self.out, self.every, self.rng = out, every, random.Random(seed)
        self.ops = self.images = 0
        self.acknowledged: list[tuple[str, int]] = []

    def track(self, name: str) -> None:
        """Start modelling ``name`` (a new file: durable and empty)."""
        with self.lock:
            if name not in self.durable:
                self.durable[name] = bytearray()
                self.pending[name] = []

    def operation(self, name: str, op: Op | None) -> None:
        """Record one write, truncation or (``op`` None) sync; maybe cut the power first."""
        with self.lock:
            self.ops += 1
            if self.ops % self.every == 0:
                self.cut()
            if op is not None:
                self.pending[name].append(op)
            else:
                self.durable[name] = apply(self.durable[name], self.pending[name])
                self.pending[name] = []

    def forget(self, name: str) -> None:
        """The file was deleted."""
        with self.lock:
            self.durable.pop(name, None)
            self.pending.pop(name, None)

    def cut(self) -> None:
        """Write what a disk could hold after a power cut now, and what was acknowledged."""
        self.images += 1
        image = self.out / f"image-{self.images}"
        image.mkdir()
        dropped = 0
        for name, durable in self.durable.items():
            kept = [op for op in self.pending[name] if self.rng.random() < 0.5]
            dropped += len(self.pending[name]) - len(kept)
            (image / os.path.basename(name)).write_bytes(apply(durable, kept))
        with open(self.out / "manifest.jsonl", "a") as manifest:
            line = {"image": image.name, "acknowledged": self.acknowledged, "dropped": dropped}
            manifest.write(json.dumps(line) + "\n")


def apply(durable: bytearray, ops: Iterable[Op]) -> bytearray:
    """``durable`` with ``ops`` applied in order."""
    data = bytearray(durable)
    for kind, where, payload in ops:
        if kind == "w":
            if len(data) < where:
                data.extend(bytes(where - len(data)))
            data[where : where + len(payload)] = payload
        else:
            del data[where:]
    return data


DISK: Disk


class File(apsw.VFSFile):  # type: ignore[misc]
    """A file of the default VFS whose writes and syncs the Disk models."""

    def __init__(self, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)
        self.name = name.filename() if hasattr(name, "filename") else str(name)
        self.modelled = not self.name.endswith("-shm")
        if self.modelled:
            DISK.track(self.name)

    def xWrite(self, data: bytes, offset: int) -> None:
        if self.modelled:
            DISK.operation(self.name, ("w", offset, bytes(data)))
        super().xWrite(data, offset)

    def xTruncate(self, size: int) -> None:
        if self.modelled:
            DISK.operation(self.name, ("t", size, b""))
        super().xTruncate(size)

    def xSync(self, flags: int) -> None:
        if self.modelled:
            DISK.operation(self.name, None)
        super().xSync(flags)


class Vfs(apsw.VFS):  # type: ignore[misc]
    """The default VFS, with files that report to the Disk."""

    def __init__(self) -> None:
        super().__init__("powerloss", "")

    def xOpen(self, name: Any, flags: list[int]) -> File:
        return File(name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        DISK.forget(filename)
        super().xDelete(filename, syncdir)


class Cursor:
    """The part of a sqlite3 cursor aiosqlite uses, over rows fetched at once."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows, self.rowcount, self.lastrowid, self.description = rows, -1, None, None

    def fetchall(self) -> list[Any]:
        rows, self.rows = self.rows, []
        return rows

    def fetchone(self) -> Any:
        return self.rows.pop(0) if self.rows else None

    def fetchmany(self, size: int = 1) -> list[Any]:
        rows, self.rows = self.rows[:size], self.rows[size:]
        return rows

    def close(self) -> None:
        self.rows = []


class Connection:
    """The part of a sqlite3 connection aiosqlite and tasktrail use, over apsw (safe to
    use from the one thread at a time that tasktrail uses it from)."""

    def __init__(self, path: str) -> None:
        self.db = apsw.Connection(path, vfs="powerloss")
        self.db.execute("PRAGMA page_size = 1024")  # small images; set before the schema

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return Cursor(list(self.db.execute(sql, tuple(params))))
        except apsw.Error as err:
            raise sqlite3.OperationalError(str(err)) from err

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        try:
            list(self.db.executemany(sql, [tuple(row) for row in rows]))
        except apsw.Error as err:
            raise sqlite3.OperationalError(str(err)) from err
        return Cursor([])

    @property
    def in_transaction(self) -> bool:
        return not self.db.get_autocommit()

    def close(self) -> None:
        self.db.close()


def open_connection(path: str, **_: Any) -> Connection:
    """The store's writing connection (used from its writer thread), on the power-loss VFS."""
    return Connection(path)


def connect(path: str, **_: Any) -> aiosqlite.Connection:
    """``aiosqlite.connect`` for tasktrail, on the power-loss VFS."""
    return aiosqlite.Connection(lambda: Connection(path), 64)  # type: ignore[arg-type, return-value]


async def workload(path: Path, synchronous: str) -> None:
    """Four chains of appends (a creation, then a claim and start) sharing group commits."""

    async def chain(name: str) -> None:
        for n in range(12):
            task_id = f"{name}-{n}"
            done = await store.append(task_id, [NewEvent(TaskCreated(agent="a"))])
            DISK.acknowledged.append((task_id, done.version))
            events = [NewEvent(TaskClaimed(worker_id=name, attempt=1)), NewEvent(TaskStarted())]
            done = await store.append(task_id, events, expected_version=1)
            DISK.acknowledged.append((task_id, done.version))

    store = SQLiteEventStore(path, synchronous=synchronous)  # type: ignore[arg-type]
    async with store:
        await asyncio.gather(*(chain(f"c{k}") for k in range(4)))


def main(directory: str, synchronous: str, every: str) -> None:
    """Run the workload on the power-loss VFS, cutting the power every ``every`` ops."""
    global DISK
    out = Path(directory)
    DISK = Disk(out, int(every), seed=int(every))
    vfs = Vfs()
    aiosqlite.connect = connect  # type: ignore[assignment]  # what the store's reader opens
    sqlite_store.open_connection = open_connection  # type: ignore[assignment]
    asyncio.run(workload(out / "tasks.db", synchronous))
    print(json.dumps({"ops": DISK.ops, "images": DISK.images}))
    del vfs


if __name__ == "__main__":
    main(*sys.argv[1:])
