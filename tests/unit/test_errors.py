"""The exception tree and the public surface."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import pytest

import tasktrail
from tasktrail import errors


def test_every_error_is_a_tasktrail_error() -> None:
    """Every exception class in tasktrail.errors derives from TasktrailError."""
    classes = [
        obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, Exception)
    ]
    assert len(classes) == len(errors.__all__)
    assert all(issubclass(cls, errors.TasktrailError) for cls in classes)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        pytest.param(errors.TaskNotFoundError, LookupError, id="not-found"),
        pytest.param(errors.WaitTimeoutError, TimeoutError, id="timeout"),
        pytest.param(errors.InvalidInputError, ValueError, id="invalid"),
        pytest.param(errors.StorageError, OSError, id="storage"),
    ],
)
def test_errors_also_subclass_the_builtin_they_mean(error: type, builtin: type) -> None:
    """Callers catching the builtin exception catch tasktrail's too."""
    assert issubclass(error, builtin)


def test_errors_carry_their_facts() -> None:
    """Fields are attributes and the message says what to do."""
    err = errors.VersionConflictError("t1", expected=2, actual=3)
    assert (err.task_id, err.expected, err.actual) == ("t1", 2, 3)
    assert "retry" in str(err)
    tampered = errors.TamperedLogError(42, "hash mismatch")
    assert tampered.sequence == 42
    assert "42" in str(tampered)


def test_tree_in_docstring_lists_every_error() -> None:
    """The tree drawn at the top of errors.py names every exported error."""
    doc = errors.__doc__ or ""
    missing = [name for name in errors.__all__ if name not in doc]
    assert missing == []


def test_public_api_is_curated() -> None:
    """__all__ is sorted, every name in it exists, and it names every public name the
    package defines (a missing export fails), as httpx's test does."""
    assert list(tasktrail.__all__) == sorted(tasktrail.__all__)
    for name in tasktrail.__all__:
        assert hasattr(tasktrail, name), name
    assert set(errors.__all__) <= set(tasktrail.__all__)
    defined = {
        name
        for name, value in vars(tasktrail).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert defined | {"PostgresEventStore"} == set(tasktrail.__all__)  # that one is lazy


def test_importing_tasktrail_loads_no_driver_nor_command_line() -> None:
    """``import tasktrail`` imports no database driver, click, rich, nor an extra's package."""
    code = (
        "import sys, tasktrail; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aiosqlite', 'asyncpg', 'click', 'rich', 'starlette', 'uvicorn', 'mcp', 'jinja2'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
