"""tasktrail: durable background tasks on an append-only, hash-chained event log."""

import logging
from typing import TYPE_CHECKING

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
    AgentSessionRunner,
    AsyncClient,
    Client,
    Registry,
    RunContext,
    ScriptedSession,
    SubprocessRunner,
    TaskManager,
)
from tasktrail.store import (
    AppendResult,
    EventStore,
    SQLiteEventStore,
    Subscription,
    VerifyReport,
    open_store,
)

if TYPE_CHECKING:
    from tasktrail.store.postgres import PostgresEventStore

__version__ = "0.1.0"

# The library logs through the "tasktrail" hierarchy and leaves output to the application
# (the command line sets up its own): nothing reaches stderr unless logging is configured.
logging.getLogger("tasktrail").addHandler(logging.NullHandler())

__all__ = [
    "AgentSessionRunner",
    "AppLoadError",
    "AppendResult",
    "AsyncClient",
    "AttemptSupersededError",
    "CancelRequested",
    "ChildFinished",
    "Client",
    "ConcurrencyLimitError",
    "ConfigError",
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
    "RunnerError",
    "SQLiteEventStore",
    "ScriptedSession",
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
    "fold",
    "open_store",
]


def __getattr__(name: str) -> object:
    """``PostgresEventStore`` on first use: ``import tasktrail`` needs no asyncpg."""
    if name == "PostgresEventStore":
        from tasktrail.store.postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
