"""How long a store's commits take: a histogram with Prometheus's cumulative buckets."""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["COMMIT_BUCKETS", "CommitStatistics", "LatencyHistogram"]


COMMIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the commit latency histogram's buckets."""


class LatencyHistogram:
    """Counts of observed durations per bucket (cumulative, as Prometheus has them)."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(COMMIT_BUCKETS)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.total += seconds
        self.count += 1
        for index, bound in enumerate(COMMIT_BUCKETS):
            if seconds <= bound:
                self.counts[index] += 1

    def snapshot(self) -> CommitStatistics:
        """The figures so far, as an immutable record."""
        return CommitStatistics(
            commits=self.count,
            seconds_sum=self.total,
            buckets=tuple(zip(COMMIT_BUCKETS, self.counts, strict=True)),
        )


class CommitStatistics(msgspec.Struct, frozen=True):
    """How long this store's commits took (see :meth:`EventStore.commit_statistics`)."""

    commits: int
    """Batches committed (or failed) so far by this store object."""
    seconds_sum: float
    buckets: tuple[tuple[float, int], ...]
    """(upper bound in seconds, commits that took at most that long): cumulative."""
