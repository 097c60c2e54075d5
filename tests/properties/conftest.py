"""The state machines run once per backend, each of their runs on a new database."""

from __future__ import annotations

import pytest
from hypothesis import settings

from pgserver import Databases

# On PostgreSQL every step costs round trips to the server (and each run a migration): a sixth
# of the profile's runs (10 in CI) keeps the suite's time reasonable; soak still gives it 333.
POSTGRES_SHARE = 6


@pytest.fixture
def machine_settings(databases: Databases) -> settings:
    """The hypothesis profile's settings, with fewer runs on PostgreSQL."""
    current = settings()
    if databases.backend == "postgres":
        return settings(current, max_examples=max(1, current.max_examples // POSTGRES_SHARE))
    return current
