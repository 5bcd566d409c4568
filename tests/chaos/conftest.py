from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.harness import Cluster, running_cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """privacy, accounts and points as processes on an embedded PostgreSQL of their own;
    everything is killed at teardown."""
    with running_cluster(MEMBERSHIP_POINTS_JOBS_INTERVAL_S="0") as running:
        yield running
