"""`bankctl up --tls`: gateways and bank-nodes serve TLS only, with certificates the launcher
made; clients, gateways and relays verify them against the cluster's CA."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bank.v1 import ledger_pb2
from bankclient import BankClient
from services.cluster.tls import make_certificates
from services.cluster.topology import ClusterSpec
from services.common.identifiers import slot_of_account
from tests.integration.cluster_helpers import Cluster, bankctl


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("tls")
    up = bankctl(home, "up", "--tls", "--net", "loopback", "--name", "bks", "--octet", "84")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield Cluster(home)
    finally:
        assert bankctl(home, "down").returncode == 0


def health(endpoint: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.secure_channel(endpoint, credentials) if credentials else grpc.insecure_channel(endpoint)
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_money_moves_over_tls_across_shards(tls_cluster: Cluster) -> None:
    assert all(c["healthy"] for c in tls_cluster.status()["components"])  # status speaks TLS too
    with BankClient.from_home(tls_cluster.home) as client:
        accounts = []
        for customer in ("tls-a", "tls-b", "tls-c", "tls-d", "tls-e", "tls-f"):
            account = client.open_account(customer, "CNY").account_number
            client.deposit(account, 10_000, "CNY")
            accounts.append(account)
        shards = {ClusterSpec().shard_of_slot(slot_of_account(a)) for a in accounts}
        assert len(shards) >= 2, accounts  # at least one transfer below crosses shards
        ids = [client.transfer(accounts[0], other, 100, "CNY").transfer_id for other in accounts[1:]]
        deadline = time.monotonic() + 20
        while any(client.get_transfer(t).status != ledger_pb2.TRANSFER_STATUS_COMMITTED for t in ids):
            assert time.monotonic() < deadline, "cross-shard credits were not delivered over TLS"
            time.sleep(0.1)
        assert client.get_account(accounts[0]).balance == 10_000 - 100 * 5


def test_clear_text_and_an_unknown_ca_are_refused(tls_cluster: Cluster, tmp_path: Path) -> None:
    foreign = make_certificates(ClusterSpec(net="loopback", name="other", octet=84), tmp_path)
    ours = (tls_cluster.home / "credentials" / "tls" / "ca.pem").read_bytes()
    for kind in ("gateway", "node"):
        component = tls_cluster.components(kind)[0]
        endpoint = f"{component['host']}:{component['port']}"
        assert health(endpoint, None) == grpc.StatusCode.UNAVAILABLE
        assert (
            health(endpoint, grpc.ssl_channel_credentials(foreign.read_bytes()))
            == grpc.StatusCode.UNAVAILABLE
        )
        assert health(endpoint, grpc.ssl_channel_credentials(ours)) == grpc.StatusCode.OK
    key = tls_cluster.home / "credentials" / "tls" / "dc1.key"
    assert key.stat().st_mode & 0o077 == 0
