"""The driver calls and dialect a backend supplies to the store methods written once
(:mod:`._backend`, :mod:`._task_queries`, :mod:`._operational`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from tasktrail.store._query import Params

__all__ = ["Driver"]


class Driver(ABC):
    """Reads and operational writes, and the SQL dialect they are written in."""

    _NUMBERED: ClassVar[bool]
    """Placeholders: ``$1, $2 ...`` (PostgreSQL) or ``?`` (SQLite)."""
    _ORDER: ClassVar[str]
    """The column of the creation order: SQLite's ``rowid``, PostgreSQL's ``ord``."""
    _IDS_PER_QUERY: ClassVar[int]
    """The most task ids one query names."""

    _clock: Callable[[], float]

    def _params(self) -> Params:
        """The parameters of one statement, in this backend's placeholders."""
        return Params(numbered=self._NUMBERED)

    @abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a read-only query."""

    @abstractmethod
    async def _write_row(self, sql: str, params: Sequence[Any]) -> None:
        """Run one write of an operational table (workers, deliveries, checkpoints)."""
