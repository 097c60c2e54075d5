"""Opening a PostgreSQL store whose server cannot be reached at all: reported after
``connect_timeout`` naming the host and port, not retried for ``retry_timeout``.

Each test sets ``retry_timeout`` to an hour: a store that took an unreachable server for a
transient failure would still be retrying when the hang guard (a minute) ends the test.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator

import pytest

from tasktrail import InvalidInputError, PostgresEventStore, StorageError

HOUR = 3600.0


async def open_error(url: str, **settings: float) -> str:
    """The message of the StorageError that opening a store on ``url`` raises."""
    store = PostgresEventStore(url, retry_timeout=HOUR, **settings)
    try:
        async with asyncio.timeout(60):  # a hang guard, not a timing claim
            with pytest.raises(StorageError) as info:
                await store.open()
    except TimeoutError:
        raise AssertionError(f"opening {url} was still retrying after a minute") from None
    finally:
        await store.close()
    return str(info.value)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a stalled server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_refused_connection_is_reported_naming_host_and_port() -> None:
    """Nothing listening: 'connection refused' with host:port and the redacted URL."""
    message = await open_error("postgresql://app:secret@127.0.0.1:9/tasks", connect_timeout=0.5)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:9 ")
    assert "connection refused" in message
    assert "postgresql://app:***@127.0.0.1:9/tasks" in message
    assert "secret" not in message


async def test_a_server_that_never_answers_is_reported(black_hole: int) -> None:
    """A server that accepts but never answers is 'no answer', not an hour of retries."""
    message = await open_error(f"postgresql://app@127.0.0.1:{black_hole}/db", connect_timeout=1)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{black_hole} ")
    assert "no answer" in message


async def test_an_unknown_host_is_reported_at_once() -> None:
    """A host name that does not resolve is reported on the first try, naming it."""
    message = await open_error("postgresql://app@no-such-host.invalid/db", connect_timeout=HOUR)
    assert message.startswith("cannot connect to PostgreSQL at no-such-host.invalid:5432 ")
    assert "cannot resolve the host name" in message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param("5", id="str"),
    ],
)
def test_a_bad_connect_timeout_is_refused(value: object) -> None:
    """connect_timeout must be a finite number of seconds > 0."""
    with pytest.raises(InvalidInputError, match="connect_timeout"):
        PostgresEventStore("postgresql://app@127.0.0.1/db", connect_timeout=value)  # type: ignore[arg-type]
