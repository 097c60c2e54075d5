"""tasktrail: durable background tasks on an append-only, hash-chained event log."""

import importlib.metadata as _metadata
import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING

from tasktrail.errors import (
    AppLoadError,
    AttemptSupersededError,
    ConcurrencyLimitError,
    ConfigError,
    CorruptDatabaseError,
    CorruptEventError,
    EventIdConflictError,
    EventLoopError,
    IllegalTransitionError,
    IncompatibleSchemaError,
    InvalidInputError,
    InvalidTaskIdError,
    PayloadTooLargeError,
    ProcessFailedError,
    ProcessStartError,
    ReadOnlyStorageError,
    RunnerError,
    SessionFailedError,
    StorageBusyError,
    StorageError,
    StorageFullError,
    StoreClosedError,
    TamperedLogError,
    TaskCancelledError,
    TaskExistsError,
    TaskFailedError,
    TaskNotFoundError,
    TasktrailError,
    UnknownEventTypeError,
    VersionConflictError,
    WaitTimeoutError,
)
from tasktrail.events import (
    CancelRequested,
    ChildFinished,
    Event,
    NewEvent,
    OutputAppended,
    ProgressReported,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from tasktrail.lifecycle import TaskState, Trigger
from tasktrail.projection import Task, fold
from tasktrail.runtime import (
    AgentSession,
    AgentSessionRunner,
    AsyncClient,
    Client,
    Clock,
    Registry,
    RunContext,
    Runner,
    SubprocessRunner,
    TaskManager,
)
from tasktrail.store import (
    AppendResult,
    ClaimRequest,
    ClaimResult,
    CommitStatistics,
    Control,
    EventStore,
    SQLiteEventStore,
    Subscription,
    VerifyReport,
    WorkerInfo,
    open_store,
)

if _TYPE_CHECKING:
    from tasktrail.store.postgres import PostgresEventStore

try:
    __version__ = _metadata.version("tasktrail")
except _metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
    __version__ = "0+unknown"

# The library logs through the "tasktrail" hierarchy and leaves output to the application
# (the command line sets up its own): nothing reaches stderr unless logging is configured.
_logging.getLogger("tasktrail").addHandler(_logging.NullHandler())

__all__ = [
    "AgentSession",
    "AgentSessionRunner",
    "AppLoadError",
    "AppendResult",
    "AsyncClient",
    "AttemptSupersededError",
    "CancelRequested",
    "ChildFinished",
    "ClaimRequest",
    "ClaimResult",
    "Client",
    "Clock",
    "CommitStatistics",
    "ConcurrencyLimitError",
    "ConfigError",
    "Control",
    "CorruptDatabaseError",
    "CorruptEventError",
    "Event",
    "EventIdConflictError",
    "EventLoopError",
    "EventStore",
    "IllegalTransitionError",
    "IncompatibleSchemaError",
    "InvalidInputError",
    "InvalidTaskIdError",
    "NewEvent",
    "OutputAppended",
    "PayloadTooLargeError",
    "PostgresEventStore",
    "ProcessFailedError",
    "ProcessStartError",
    "ProgressReported",
    "ReadOnlyStorageError",
    "RecordedEvent",
    "Registry",
    "RunContext",
    "Runner",
    "RunnerError",
    "SQLiteEventStore",
    "SessionFailedError",
    "StorageBusyError",
    "StorageError",
    "StorageFullError",
    "StoreClosedError",
    "SubprocessRunner",
    "Subscription",
    "TamperedLogError",
    "Task",
    "TaskCancelled",
    "TaskCancelledError",
    "TaskClaimed",
    "TaskCompleted",
    "TaskCreated",
    "TaskExistsError",
    "TaskFailed",
    "TaskFailedError",
    "TaskManager",
    "TaskNotFoundError",
    "TaskRequeued",
    "TaskStarted",
    "TaskState",
    "TasktrailError",
    "Trigger",
    "UnknownEventTypeError",
    "VerifyReport",
    "VersionConflictError",
    "WaitTimeoutError",
    "WorkerInfo",
    "fold",
    "open_store",
]


def __getattr__(name: str) -> object:
    """``PostgresEventStore`` on first use: ``import tasktrail`` needs no asyncpg."""
    if name == "PostgresEventStore":
        from tasktrail.store.postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
