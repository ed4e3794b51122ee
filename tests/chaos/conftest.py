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


@pytest.fixture(autouse=True)
def no_fault_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that fails halfway leaves its faults active: heal them, or every later test on the
    shared cluster fails for that test's reason instead of its own."""
    cluster = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    yield
    if cluster is None:
        return
    from services.cluster.state import ClusterState

    state = ClusterState.load(cluster.home)
    if state is not None and any(f.get("active") for f in state.faults):
        healed = bankctl(cluster.home, "chaos", "heal", timeout_s=300)
        assert healed.returncode == 0, healed.stdout[-2000:] + healed.stderr[-2000:]


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
