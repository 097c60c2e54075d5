"""Every error tasktrail raises.

The whole tree, so a caller can pick the level it cares about::

    TasktrailError
    ├── TaskNotFoundError            (also LookupError)
    ├── TaskExistsError
    ├── IllegalTransitionError
    │   └── AttemptSupersededError
    ├── VersionConflictError
    ├── ConcurrencyLimitError
    ├── EventIdConflictError
    ├── InvalidInputError            (also ValueError)
    │   ├── InvalidTaskIdError
    │   ├── PayloadTooLargeError
    │   ├── UnknownEventTypeError
    │   ├── ConfigError
    │   └── AppLoadError
    ├── StorageError                 (also OSError)
    │   ├── StorageBusyError
    │   ├── StorageFullError
    │   ├── ReadOnlyStorageError
    │   ├── CorruptDatabaseError
    │   │   └── CorruptEventError
    │   ├── IncompatibleSchemaError
    │   └── StoreClosedError
    ├── TamperedLogError
    ├── TaskFailedError
    ├── TaskCancelledError
    ├── RunnerError
    │   ├── ProcessStartError
    │   ├── ProcessFailedError
    │   └── SessionFailedError
    ├── WaitTimeoutError             (also TimeoutError)
    └── EventLoopError               (also RuntimeError)

Every error carries its facts as attributes (``task_id``, ``sequence`` ...), and every
message says what happened and, where there is one, what to do about it. Errors raised
while talking to the database are chained (``raise ... from``) to the driver's error.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence

__all__ = [
    "AppLoadError",
    "AttemptSupersededError",
    "ConcurrencyLimitError",
    "ConfigError",
    "CorruptDatabaseError",
    "CorruptEventError",
    "EventIdConflictError",
    "EventLoopError",
    "IllegalTransitionError",
    "IncompatibleSchemaError",
    "InvalidInputError",
    "InvalidTaskIdError",
    "PayloadTooLargeError",
    "ProcessFailedError",
    "ProcessStartError",
    "ReadOnlyStorageError",
    "RunnerError",
    "SessionFailedError",
    "StorageBusyError",
    "StorageError",
    "StorageFullError",
    "StoreClosedError",
    "TamperedLogError",
    "TaskCancelledError",
    "TaskExistsError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TasktrailError",
    "UnknownEventTypeError",
    "VersionConflictError",
    "WaitTimeoutError",
]


class TasktrailError(Exception):
    """The base of every error tasktrail raises."""


class TaskNotFoundError(TasktrailError, LookupError):
    """No task has this id."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {task_id!r}")


class TaskExistsError(TasktrailError):
    """A task with this id already exists; it was left untouched."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"a task with id {task_id!r} already exists; choose another id or omit it")


class IllegalTransitionError(TasktrailError):
    """The lifecycle does not allow this event in the task's current state.

    Nothing was written.
    """

    def __init__(self, task_id: str, state: str | None, trigger: str, *, detail: str = "") -> None:
        self.task_id = task_id
        self.state = state
        self.trigger = trigger
        where = f"in state '{state}'" if state is not None else "before it exists"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"task {task_id!r} cannot {trigger!r} {where}{extra}; nothing was written")


class AttemptSupersededError(IllegalTransitionError):
    """A write of an attempt that no longer owns its task (the fence of every attempt).

    Each write an attempt makes names the claim it runs under (worker and attempt
    number). Once the task was re-queued, claimed again, or finished by someone else,
    the old attempt can write nothing: its worker stops it. Nothing was written.
    """

    def __init__(
        self, task_id: str, state: str, *, worker_id: str, attempt: int, owner: str
    ) -> None:
        self.worker_id = worker_id
        self.attempt = attempt
        super().__init__(
            task_id,
            state,
            "continue its attempt",
            detail=f"attempt {attempt} of worker {worker_id} was superseded: {owner}",
        )


class VersionConflictError(TasktrailError):
    """The stream moved on since the caller read it (optimistic concurrency).

    Nothing was written. Read the task again and decide anew.
    """

    def __init__(self, task_id: str, expected: int, actual: int) -> None:
        self.task_id = task_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"task {task_id!r} is at version {actual}, not the expected {expected}; "
            "nothing was written: read it again and retry"
        )


class ConcurrencyLimitError(TasktrailError):
    """A claim would exceed its concurrency limit; nothing was written.

    Checked under the database's write lock, so workers in different processes can never
    together start more tasks of one key than its limit.
    """

    def __init__(self, task_id: str, key: str, limit: int) -> None:
        self.task_id = task_id
        self.key = key
        self.limit = limit
        super().__init__(
            f"task {task_id!r} cannot start: {limit} task(s) of {key!r} are already "
            "starting or running; nothing was written"
        )


class EventIdConflictError(TasktrailError):
    """An event id is already stored, but not as part of this very append.

    Retries are recognised by event id: an append whose ids are all stored, in the same
    stream, is answered as a duplicate. Refused: a known id in another stream, an append
    mixing stored and new ids, and an id used twice in one append. Payloads are not
    compared, so never reuse an id for different content.
    """

    def __init__(self, event_id: str, detail: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id!r} {detail}; nothing was written")


class InvalidInputError(TasktrailError, ValueError):
    """An argument was refused before anything was written."""


class ConfigError(InvalidInputError):
    """A configuration file (``tasktrail.toml``) is missing, unreadable or invalid."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: {why}")


class AppLoadError(InvalidInputError):
    """``--app MODULE:OBJECT`` names no usable registry of runners."""

    def __init__(self, spec: str, why: str) -> None:
        self.spec = spec
        super().__init__(f"--app {spec}: {why}")


class InvalidTaskIdError(InvalidInputError):
    """A task id is empty, too long, or holds a character tasktrail refuses."""

    def __init__(self, task_id: object, why: str) -> None:
        self.task_id = task_id
        super().__init__(f"invalid task id {task_id!r}: {why}")


class PayloadTooLargeError(InvalidInputError):
    """An event's encoded payload exceeds the store's limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"event payload is {size} bytes, over the limit of {limit} bytes; "
            "store large results elsewhere and keep a reference in the task"
        )


class UnknownEventTypeError(InvalidInputError):
    """An event type tag (or schema version) that this version of tasktrail does not know."""

    def __init__(self, event_type: str, detail: str = "") -> None:
        self.event_type = event_type
        extra = f": {detail}" if detail else ""
        super().__init__(f"unknown event type {event_type!r}{extra}")


class StorageError(TasktrailError, OSError):
    """The database could not do what was asked. Nothing unacknowledged was kept."""


class StorageBusyError(StorageError):
    """Another connection held the database lock for longer than the busy timeout."""


class StorageFullError(StorageError):
    """The disk (or the database's size limit) is full; the write was rolled back."""


class ReadOnlyStorageError(StorageError):
    """The database file or its directory cannot be written."""


class CorruptDatabaseError(StorageError):
    """The file is not a tasktrail database, or SQLite found it damaged."""


class CorruptEventError(CorruptDatabaseError):
    """A stored event could not be decoded."""

    def __init__(self, sequence: int, detail: str) -> None:
        self.sequence = sequence
        super().__init__(
            f"event at sequence {sequence} cannot be decoded ({detail}); "
            "run verify() to check the log"
        )


class IncompatibleSchemaError(StorageError):
    """The database was written by a newer tasktrail, with a schema this one does not know."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"{path} has schema version {found}, newer than this tasktrail's {known}; "
            "upgrade tasktrail to open it"
        )


class StoreClosedError(StorageError):
    """The store (or manager) was used after it was closed, or before it was opened."""

    def __init__(self, what: str = "store") -> None:
        super().__init__(f"the {what} is closed; open it with 'async with' first")


class TamperedLogError(TasktrailError):
    """The hash chain does not verify: the log was changed outside tasktrail."""

    def __init__(self, sequence: int, detail: str) -> None:
        self.sequence = sequence
        self.detail = detail
        super().__init__(f"event log tampered at sequence {sequence}: {detail}")


class TaskFailedError(TasktrailError):
    """``run()`` waited for a task that failed; ``error`` is the runner's error text."""

    def __init__(self, task_id: str, error: str | None, reason: str | None = None) -> None:
        self.task_id = task_id
        self.error = error
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(f"task {task_id!r} failed{why}: {error}")


class TaskCancelledError(TasktrailError):
    """``run()`` waited for a task that was cancelled."""

    def __init__(self, task_id: str, reason: str | None = None) -> None:
        self.task_id = task_id
        self.reason = reason
        why = f": {reason}" if reason else ""
        super().__init__(f"task {task_id!r} was cancelled{why}")


def _show(argv: Sequence[str], limit: int = 120) -> str:
    """A command line, shell-quoted and shortened for a message."""
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _signal_name(number: int) -> str:
    """A signal's name and number, e.g. ``SIGTERM (15)``."""
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return str(number)


class RunnerError(TasktrailError):
    """A runner could not do its work; the attempt fails (or is retried) with this text."""


class ProcessFailedError(RunnerError):
    """The command exited with a non-zero code or was killed by a signal.

    ``exit_code`` is the process's return code as :mod:`subprocess` reports it (``-N``
    when signal ``N`` killed it), ``signal`` the signal number (or ``None``), ``stderr_tail``
    the last non-empty line the process wrote to stderr.
    """

    def __init__(self, command: Sequence[str], exit_code: int, stderr_tail: str = "") -> None:
        self.command = list(command)
        self.exit_code = exit_code
        self.signal = -exit_code if exit_code < 0 else None
        self.stderr_tail = stderr_tail
        if self.signal is not None:
            what = f"was killed by signal {_signal_name(self.signal)}"
        else:
            what = f"exited with code {exit_code}"
        detail = f": {stderr_tail}" if stderr_tail else " (nothing on stderr)"
        super().__init__(f"command {_show(command)} {what}{detail}")


class ProcessStartError(RunnerError):
    """The command could not be started: executable missing or not executable, bad cwd."""

    def __init__(self, command: Sequence[str], cause: OSError) -> None:
        self.command = list(command)
        self.errno = cause.errno
        self.filename = cause.filename
        what = cause.strerror or type(cause).__name__
        where = f": {cause.filename!r}" if cause.filename is not None else ""
        super().__init__(
            f"cannot start command {_show(command)} ({what}{where}); "
            "check the executable, the PATH and the working directory"
        )


class SessionFailedError(RunnerError):
    """The agent session reported an error status."""

    def __init__(self, session_id: str, status: str, detail: str | None = None) -> None:
        self.session_id = session_id
        self.status = status
        self.detail = detail
        text = f": {detail}" if detail else " (no error text given)"
        super().__init__(f"agent session {session_id!r} ended with status {status!r}{text}")


class WaitTimeoutError(TasktrailError, TimeoutError):
    """Waiting for a task ended before the task did."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(f"task {task_id!r} did not finish within {timeout:g} s")


class EventLoopError(TasktrailError, RuntimeError):
    """A blocking call (:class:`~tasktrail.Client`) was made from a running event loop,
    which it would stall: use :class:`~tasktrail.AsyncClient` (``await``) there."""

    def __init__(self, call: str) -> None:
        self.call = call
        if call == "open":
            message = (
                "Client(...) blocks, and was made inside a running event loop, which it would "
                "stall; in async code use `async with AsyncClient(...) as client:` instead"
            )
        else:
            message = (
                f"Client.{call}() blocks, and was called inside a running event loop, which "
                f"it would stall; in async code use AsyncClient (await client.{call}(...))"
            )
        super().__init__(message)
