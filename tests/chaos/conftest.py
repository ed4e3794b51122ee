"""One netns cluster for the whole fault suite: the single faults and the seeded schedules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.cluster_helpers import Cluster, bankctl


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("chaos")
    up = bankctl(home, "up", "--net", "netns", "--name", "bkc", "--octet", "81")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield Cluster(home)
    finally:
        bankctl(home, "chaos", "heal")
        assert bankctl(home, "down").returncode == 0
