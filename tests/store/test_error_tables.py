"""Every row of the driver-error tables: each SQLite result code and each SQLSTATE becomes
the tasktrail error its row names (and PostgreSQL's transient rows are retried)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from pgserver import PostgresServer
from tasktrail.errors import (
    CorruptDatabaseError,
    InvalidInputError,
    StorageBusyError,
    StorageError,
    TasktrailError,
)
from tasktrail.store import _pg_errors, _sqlite_errors


def sqlite_error(text: str, code: int | None) -> sqlite3.OperationalError:
    """A driver error as SQLite raises it: with its result code (``None``: without one)."""
    err = sqlite3.OperationalError(text)
    if code is not None:
        err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize(
    ("code", "row"),
    [pytest.param(code, row, id=str(code)) for code, row in _sqlite_errors.BY_CODE.items()],
)
def test_each_sqlite_code_becomes_its_row(code: int, row: tuple[type[TasktrailError], str]) -> None:
    """A result code of the table becomes its row's error, with its row's message."""
    error = _sqlite_errors.translate(sqlite_error("the driver's text", code), "db.sqlite")
    expected_type, message = row
    assert type(error) is expected_type
    assert str(error) == message.format(where=" (db.sqlite)", text="the driver's text")


@pytest.mark.parametrize(
    "code", [pytest.param(code, id=str(code)) for code in _sqlite_errors.BY_CODE]
)
def test_an_extended_sqlite_code_is_read_as_its_primary_code(code: int) -> None:
    """An extended code not in the table means what its primary code (low 8 bits) means."""
    extended = _sqlite_errors.translate(sqlite_error("text", code | 99 << 8))
    primary = _sqlite_errors.translate(sqlite_error("text", code))
    assert (type(extended), str(extended)) == (type(primary), str(primary))


@pytest.mark.parametrize(
    ("text", "code"),
    [pytest.param(t, c, id=t) for t, c in _sqlite_errors.CODE_BY_MESSAGE.items()],
)
def test_an_sqlite_error_without_a_code_is_read_by_its_message(text: str, code: int) -> None:
    """An error without a code (a wrapper's, from SQLite's text) gets the code it names."""
    assert _sqlite_errors.result_code(sqlite_error(f"{text}: detail", None)) == code
    without = _sqlite_errors.translate(sqlite_error(text, None))
    with_code = _sqlite_errors.translate(sqlite_error(text, code))
    assert (type(without), str(without)) == (type(with_code), str(with_code))


def test_an_unknown_sqlite_error_is_a_storage_error() -> None:
    """A code outside the table, or no code and an unknown message, is the table's OTHER."""
    for err in (sqlite_error("no such table: x", sqlite3.SQLITE_ERROR), sqlite_error("?", None)):
        error = _sqlite_errors.translate(err, "db")
        assert type(error) is _sqlite_errors.OTHER[0]
        assert str(error) == _sqlite_errors.OTHER[1].format(where=" (db)", text=str(err))


def test_a_real_locked_sqlite_database_is_busy(tmp_path: Path) -> None:
    """SQLite's own BUSY, from a second connection that meets a held write lock."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as info:
            other.execute("BEGIN IMMEDIATE")
        assert info.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
        assert isinstance(_sqlite_errors.translate(info.value, str(path)), StorageBusyError)
    finally:
        holder.close()
        other.close()


def test_a_real_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    """SQLite's own NOTADB, from a file of text."""
    path = tmp_path / "text.db"
    path.write_bytes(b"not a database, only text " * 100)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError) as info:
            conn.execute("SELECT * FROM sqlite_master")
        assert info.value.sqlite_errorcode == sqlite3.SQLITE_NOTADB
        assert isinstance(_sqlite_errors.translate(info.value, str(path)), CorruptDatabaseError)
    finally:
        conn.close()


class StateError(asyncpg.PostgresError):
    """A server error of a chosen SQLSTATE (asyncpg's own classes set it per class)."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("the server's text")
        self.sqlstate = sqlstate


def full_state(key: str) -> str:
    """A whole SQLSTATE the row ``key`` covers (a class key gets a code of its class)."""
    return key if len(key) == 5 else key + "ZZZ"


@pytest.mark.parametrize(
    ("key", "row"),
    [pytest.param(key, row, id=key) for key, row in _pg_errors.BY_SQLSTATE.items()],
)
def test_each_sqlstate_becomes_its_row(key: str, row: _pg_errors.Meaning) -> None:
    """A SQLSTATE becomes its row's error and message; retried when its row says so."""
    err = StateError(full_state(key))
    error = _pg_errors.translate(err, "pg://host/db")
    assert type(error) is row.error
    assert str(error) == row.message.format(where="pg://host/db", text="the server's text")
    assert _pg_errors.is_transient(err) is row.transient


def test_an_unknown_sqlstate_is_a_storage_error() -> None:
    """A SQLSTATE outside the table (whole code and class) is the table's OTHER."""
    err = StateError("42P01")
    error = _pg_errors.translate(err, "w")
    assert type(error) is _pg_errors.OTHER.error
    assert str(error) == _pg_errors.OTHER.message.format(where="w", text="the server's text")
    assert not _pg_errors.is_transient(err)


@pytest.mark.parametrize(
    ("err", "expected", "transient"),
    [
        pytest.param(ConnectionResetError("reset"), StorageError, True, id="socket"),
        pytest.param(TimeoutError(), StorageError, True, id="timeout"),
        pytest.param(
            asyncpg.InterfaceError("connection is closed"), StorageError, True, id="closed"
        ),
        pytest.param(ValueError("bad int"), InvalidInputError, False, id="argument"),
    ],
)
def test_a_driver_error_without_a_sqlstate_is_placed_by_its_type(
    err: BaseException, expected: type[TasktrailError], transient: bool
) -> None:
    """A lost connection (retried) or an argument asyncpg refused before sending it."""
    assert type(_pg_errors.translate(err, "w")) is expected
    assert _pg_errors.is_transient(err) is transient


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A new, empty schema on the real PostgreSQL server."""
    return postgres_server.fresh_url()


async def _raised(url: str, sql: str) -> BaseException:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        return err
    finally:
        conn.terminate()
    raise AssertionError(f"{sql} did not fail")


@pytest.mark.parametrize(
    ("sql", "state", "expected"),
    [
        pytest.param("SELECT 1 / 0", "22012", InvalidInputError, id="data-exception"),
        pytest.param(
            "DO $$ BEGIN RAISE EXCEPTION 'tasktrail: the event log is append-only'; END $$",
            "P0001",
            StorageError,
            id="raise-exception",
        ),
        pytest.param(
            "SET statement_timeout = 10; SELECT pg_sleep(5)",
            "57014",
            StorageBusyError,
            id="timeout",
        ),
        pytest.param("SELECT * FROM no_such_table", "42P01", StorageError, id="unknown"),
    ],
)
async def test_real_server_errors_are_translated_by_the_table(
    pg_url: str, sql: str, state: str, expected: type[TasktrailError]
) -> None:
    """Errors of the real server carry the SQLSTATE the table is keyed by."""
    err = await _raised(pg_url, sql)
    assert getattr(err, "sqlstate", None) == state
    error = _pg_errors.translate(err, "w")
    assert type(error) is expected
    assert type(error) is _pg_errors.meaning(err).error
