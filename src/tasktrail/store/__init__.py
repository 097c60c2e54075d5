"""Event stores: the contract, and its SQLite backend."""

from tasktrail.store._plan import AppendResult
from tasktrail.store.base import EventStore, VerifyReport
from tasktrail.store.sqlite import SQLiteEventStore
from tasktrail.store.subscription import Subscription

__all__ = ["AppendResult", "EventStore", "SQLiteEventStore", "Subscription", "VerifyReport"]
