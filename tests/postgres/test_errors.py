"""Bad arguments reach the caller as InvalidInputError, never as a driver error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tasktrail import InvalidInputError, PostgresEventStore


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.read_all(limit=-1), id="negative-limit"),
        pytest.param(lambda s: s.read_all(after=2**70), id="sequence-out-of-range"),
        pytest.param(lambda s: s.read_stream("t", after_version=2**40), id="version-out-of-range"),
        pytest.param(lambda s: s.save_checkpoint("x", 2**70), id="position-out-of-range"),
        pytest.param(lambda s: s.load_checkpoint("a\x00b"), id="nul-in-name"),
    ],
)
async def test_bad_arguments_are_invalid_input(
    pg_url: str, call: Callable[[PostgresEventStore], Awaitable[Any]]
) -> None:
    """Out-of-range numbers and NUL characters raise InvalidInputError (a ValueError)."""
    async with PostgresEventStore(pg_url) as store:
        with pytest.raises(InvalidInputError) as info:
            await call(store)
        assert info.value.__cause__ is not None  # chained to the driver's error
        assert await store.head() == 0
