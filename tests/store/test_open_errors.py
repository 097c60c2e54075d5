"""Opening a database that cannot be opened: an empty or foreign target, a directory or file
this user may not use. Each is a typed error with one clear line, never a wrong file."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import new, unprivileged
from tasktrail import (
    InvalidInputError,
    ReadOnlyStorageError,
    SQLiteEventStore,
    StorageError,
    TaskManager,
    Trigger,
    open_store,
)

# -- what open_store accepts ------------------------------------------------------------


@pytest.mark.parametrize("target", [pytest.param("", id="empty"), pytest.param("  ", id="blank")])
def test_an_empty_target_is_refused(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_store('') (and TaskManager('')) is an InvalidInputError; no file is created."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match="pass a SQLite file path or a postgresql://"):
        open_store(target)
    with pytest.raises(InvalidInputError):
        TaskManager(target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "mysql://app:secret@db.example/tasks", "mysql://app:***@db.example", id="mysql"
        ),
        pytest.param("sqlite:///var/tasks.db", "for SQLite, pass the file's path", id="sqlite"),
        pytest.param("file:///tmp/tasks.db", "for SQLite, pass the file's path", id="file"),
        pytest.param("redis://localhost:6379", "redis://localhost:6379", id="redis"),
    ],
)
def test_a_url_of_another_scheme_is_refused(
    url: str, shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheme:// target other than PostgreSQL's is refused, naming the supported schemes;
    it is never taken for a directory (no ./mysql: appears)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError) as info:
        open_store(url)
    message = str(info.value)
    assert shown in message
    assert "postgresql://" in message and "postgres://" in message
    assert "secret" not in message
    assert list(tmp_path.iterdir()) == []


async def test_a_path_with_a_colon_slash_slash_inside_is_still_a_path(tmp_path: Path) -> None:
    """Only a target that starts like a URL is one: ./odd://name.db is a SQLite path."""
    (tmp_path / "odd:").mkdir()
    async with open_store(f"{tmp_path}/odd://name.db") as store:
        await store.append("t1", [new(Trigger.CREATE)])
    assert (tmp_path / "odd:" / "name.db").exists()


# -- a user without permission ------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside the per-user pytest tree (which nobody may not enter), owned by
    the user running the tests; removed afterwards whatever its mode."""
    directory = Path(tempfile.mkdtemp(prefix="tasktrail-perm-"))
    try:
        yield directory
    finally:
        directory.chmod(0o700)
        for path in directory.iterdir():
            path.chmod(0o700)
        shutil.rmtree(directory)


def attempt(path: Path) -> str:
    """Open the store at ``path`` and append once: "ok", or the error's class and message."""

    async def run() -> str:
        try:
            async with SQLiteEventStore(path) as store:
                await store.append("t1", [new(Trigger.CREATE)])
        except StorageError as err:
            return f"{type(err).__name__}: {err}"
        return "ok"

    return asyncio.run(run())


def test_creating_in_a_directory_without_write_permission_says_permission_denied(
    shared_dir: Path,
) -> None:
    """A database that cannot be created is 'permission denied' naming the directory."""
    shared_dir.chmod(0o555)
    path = shared_dir / "tasks.db"
    answer = unprivileged(lambda: attempt(path))
    assert answer.startswith("StorageError: cannot create the database"), answer
    assert "permission denied: user " in answer and f"may not write to {shared_dir}" in answer
    assert "does the directory exist" not in answer
    assert not path.exists()


def test_a_file_this_user_may_not_read_says_permission_denied(shared_dir: Path) -> None:
    """An existing database the user may not read is 'permission denied' naming the file."""
    path = shared_dir / "tasks.db"
    sqlite3.connect(path).close()
    path.chmod(0o000)
    shared_dir.chmod(0o755)
    answer = unprivileged(lambda: attempt(path))
    assert answer.startswith(
        f"StorageError: cannot open the database {path}: permission denied: user "
    ), answer
    assert answer.endswith(" may not read it"), answer


def test_a_directory_this_user_may_not_enter_says_permission_denied(shared_dir: Path) -> None:
    """A database behind a directory the user may not enter names that directory."""
    shared_dir.chmod(0o000)
    for path in (shared_dir / "tasks.db", shared_dir / "sub" / "tasks.db"):
        answer = unprivileged(lambda path=path: attempt(path))
        assert answer.startswith(f"StorageError: cannot open the database {path}"), answer
        assert answer.endswith(f"may not enter the directory {shared_dir}"), answer


def test_a_file_this_user_may_only_read_is_read_only_storage(shared_dir: Path) -> None:
    """A database the user may read but not write is a ReadOnlyStorageError saying why."""
    path = shared_dir / "tasks.db"
    assert attempt(path) == "ok"
    path.chmod(0o444)
    shared_dir.chmod(0o555)
    answer = unprivileged(lambda: attempt(path))
    assert answer.startswith(f"{ReadOnlyStorageError.__name__}: the database {path} is read-only: "
                             "permission denied: "), answer  # fmt: skip
