"""tasktrail imports and works on SQLite without asyncpg; a PostgreSQL URL then says what
to install."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_ASYNCPG = """
import sys
sys.modules["asyncpg"] = None  # as if it were not installed
import tasktrail
from tasktrail import StorageError, open_store
assert type(open_store("tasks.db")).__name__ == "SQLiteEventStore"
try:
    open_store("postgresql://db.internal/app")
except StorageError as err:
    print(err)
"""


def test_postgres_url_without_asyncpg_names_the_extra(tmp_path) -> None:
    """Without asyncpg, import works; a postgresql:// URL raises StorageError naming the fix."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_ASYNCPG],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pip install 'tasktrail[postgres]'" in done.stdout
