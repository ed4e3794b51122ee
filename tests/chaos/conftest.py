"""One netns cluster for the whole fault suite: the single faults and the seeded schedules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.helpers import ACCOUNTS, SHARDS, shard_of
from tests.integration.cluster_helpers import Cluster, bankctl


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("chaos")
    up = bankctl(home, "up", "--net", "netns", "--name", "bkc", "--octet", "81", "--with-prometheus")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield Cluster(home)
    finally:
        bankctl(home, "chaos", "heal")
        assert bankctl(home, "down").returncode == 0


@pytest.fixture(scope="session")
def accounts(cluster: Cluster) -> list[str]:
    numbers = []
    with cluster.client() as client:
        for i in range(ACCOUNTS):
            account = client.open_account(f"chaos-customer-{i}", "CNY").account_number
            client.deposit(account, 1_000_000, "CNY")
            numbers.append(account)
    assert {shard_of(a) for a in numbers} == set(range(SHARDS))
    return numbers
