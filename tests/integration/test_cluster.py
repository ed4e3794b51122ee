"""`bankctl up / status / down` with real processes, in namespaces and on loopback. Everything
is checked by asking ZooKeeper, Redis, Sentinel and PostgreSQL themselves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
import pytest
import redis

from bank.v1 import account_pb2, account_pb2_grpc
from services.cluster import forwarding
from services.cluster.netns import list_namespaces
from services.cluster.topology import ClusterSpec
from services.cluster.zookeeper import zk_mode
from services.common.identifiers import slot_of_customer
from tests.eventually import eventually
from tests.integration.cluster_helpers import peer_metadata, secrets
from tests.integration.conftest import report

BANKCTL = [sys.executable, "-m", "services.cli.main"]


def bankctl(home: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BANKCTL, "--home", str(home), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def cluster_pids(status: dict[str, Any]) -> set[int]:
    """Every process of the cluster: each component and, for PostgreSQL, all its children."""
    pids: set[int] = set()
    for component in status["components"]:
        if component["pid"]:
            pids.add(component["pid"])
            pids.update(child.pid for child in psutil.Process(component["pid"]).children(recursive=True))
    return pids


@pytest.fixture(scope="module", params=["netns", "loopback"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The netns cluster runs with the host's `FORWARD` policy at `DROP`, as a Docker daemon
    leaves it: the DC bridge's own rule must carry the traffic between the DCs."""
    net = request.param
    home = tmp_path_factory.mktemp(f"cluster-{net}")
    started = time.monotonic()
    policy = forward_policy()
    if net == "netns":
        set_forward_policy("DROP")
    try:
        up = bankctl(home, "up", "--net", net, "--name", "bkt", "--octet", "77", "--day-seconds", "3")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        report(pytestconfig, f"\n[cluster] bankctl up --net {net}: {time.monotonic() - started:.1f} s")
        status = bankctl(home, "status", "--json")
        assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-2000:]
        yield home, json.loads(status.stdout)
        down = bankctl(home, "down")
        assert down.returncode == 0, down.stderr
        # The bridge's rule goes with the cluster; the policy is the host's, left as it was.
        assert forwarding.bridge_rules(ClusterSpec(name="bkt", octet=77, net="netns")) == []
        assert forward_policy() == ("DROP" if net == "netns" else policy)
    finally:
        bankctl(home, "down")
        set_forward_policy(policy)


def forward_policy() -> str:
    listed = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True)
    return listed.stdout.splitlines()[0].split()[-1]  # "-P FORWARD ACCEPT"


def set_forward_policy(policy: str) -> None:
    subprocess.run(["iptables", "-P", "FORWARD", policy], check=True)


def test_the_business_date_moves_by_itself_on_compressed_days(cluster: tuple[Path, dict[str, Any]]) -> None:
    """Days of 3 s: the bank's date moves at each cutoff, with nobody asking, and every shard's
    own database follows it."""
    home, _ = cluster

    def day() -> dict[str, Any]:
        shown = bankctl(home, "day", "--json")
        assert shown.returncode == 0, shown.stderr[-2000:]
        return dict(json.loads(shown.stdout))

    first = day()
    assert first["day_seconds"] == 3

    def moved_and_followed() -> dict[str, Any] | None:
        now = day()
        dates = {row["business_date"] for row in now["shards"]}
        return (
            now if now["business_date"] > first["business_date"] and dates == {now["business_date"]} else None
        )

    later = eventually(moved_and_followed, 20, "the business date to move and every shard to follow")
    assert all(row["last_cut"] is not None for row in later["shards"])


def test_dc_bridge_passes_a_forward_policy_of_drop(cluster: tuple[Path, dict[str, Any]]) -> None:
    _, status = cluster
    if status["net"] != "netns":
        assert forwarding.bridge_rules(ClusterSpec(name="bkt", octet=77, net="loopback")) == []
        return
    assert forward_policy() == "DROP"
    # In Docker's own chain for rules of its users when a Docker daemon made one.
    chain = forwarding.DOCKER_USER if forwarding.has_chain(forwarding.DOCKER_USER) else forwarding.FORWARD
    assert forwarding.bridge_rules(ClusterSpec(name="bkt", octet=77, net="netns")) == [chain]


def by_kind(status: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in status["components"] if c["kind"] == kind]


def test_status_shape(cluster: tuple[Path, dict[str, Any]]) -> None:
    _, status = cluster
    assert status["dcs"] == ["dc1", "dc2", "dc3"]
    kinds = {c["kind"] for c in status["components"]}
    assert kinds == {"zookeeper", "redis", "sentinel", "postgres", "node", "gateway"}
    assert len(by_kind(status, "postgres")) == 9
    assert all(c["healthy"] for c in status["components"]), status["components"]
    for component in status["components"]:
        assert {"dc", "kind", "shard", "role", "host", "port", "pid", "healthy"} <= set(component)
    # Every DC leads exactly one shard.
    assert sorted(s["primary_dc"] for s in status["shards"]) == ["dc1", "dc2", "dc3"]
    assert all(s["epoch"] == 1 for s in status["shards"])
    if status["net"] == "netns":
        assert set(status["namespaces"].values()) <= set(list_namespaces())
        assert status["netem"]["available"] in (True, False) and status["netem"]["detail"]


def test_zookeeper_has_one_leader_and_two_followers(cluster: tuple[Path, dict[str, Any]]) -> None:
    _, status = cluster
    modes = sorted(str(zk_mode(c["host"], c["port"])) for c in by_kind(status, "zookeeper"))
    assert modes == ["follower", "follower", "leader"]


def test_redis_primary_has_two_replicas_and_sentinels_agree(cluster: tuple[Path, dict[str, Any]]) -> None:
    home, status = cluster
    password = secrets(home)["redis_password"]
    roles = {}
    for component in by_kind(status, "redis"):
        client = redis.Redis(
            host=component["host"], port=component["port"], password=password, socket_timeout=2
        )
        roles[component["host"]] = client.info("replication")
        client.close()
    primaries = [host for host, info in roles.items() if info["role"] == "master"]
    assert len(primaries) == 1
    assert roles[primaries[0]]["connected_slaves"] == 2
    named = set()
    for component in by_kind(status, "sentinel"):
        client = redis.Redis(
            host=component["host"], port=component["port"], password=password, socket_timeout=2
        )
        host, port = client.execute_command("SENTINEL", "get-master-addr-by-name", "bank")
        named.add((host.decode() if isinstance(host, bytes) else host, int(port)))
        assert len(client.execute_command("SENTINEL", "sentinels", "bank")) == 2
        client.close()
    assert named == {(primaries[0], 6379)}


def test_each_shard_streams_to_two_standbys_and_commits_reach_both(
    cluster: tuple[Path, dict[str, Any]],
) -> None:
    home, status = cluster
    password = json.loads((home / "cluster.json").read_text())["secrets"]["pg_password"]

    def connect(component: dict[str, Any]) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=component["host"], port=component["port"], user="bank", password=password, dbname="bank",
            autocommit=True, connect_timeout=3,
        )  # fmt: skip

    for shard in range(3):
        members = [c for c in by_kind(status, "postgres") if c["shard"] == shard]
        primary = [c for c in members if c["role"] == "primary"]
        standbys = [c for c in members if c["role"] == "standby"]
        assert len(primary) == 1 and len(standbys) == 2
        marker = f"m-{uuid.uuid4()}"
        with connect(primary[0]) as conn:
            rows = conn.execute(
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            ).fetchall()
            assert sorted(r[0] for r in rows) == sorted(f"s{shard}_{c['dc']}" for c in standbys)
            assert all(r[1] == "streaming" for r in rows)
            assert conn.execute("SHOW synchronous_standby_names").fetchone() == (
                f"ANY 1 (s{shard}_dc1, s{shard}_dc2, s{shard}_dc3)",
            )
            conn.execute("CREATE TABLE IF NOT EXISTS replication_probe (marker text)")
            conn.execute("INSERT INTO replication_probe VALUES (%s)", (marker,))
        for standby in standbys:
            with connect(standby) as conn:
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                deadline = time.monotonic() + 10
                while True:
                    exists = conn.execute("SELECT to_regclass('replication_probe') IS NOT NULL").fetchone()
                    if exists == (True,) and conn.execute(
                        "SELECT count(*) FROM replication_probe WHERE marker = %s", (marker,)
                    ).fetchone() == (1,):
                        break
                    assert time.monotonic() < deadline, f"commit never reached {standby['name']}"
                    time.sleep(0.05)


def test_nodes_serve_their_shards_and_redirect_others(cluster: tuple[Path, dict[str, Any]]) -> None:
    home, status = cluster
    peer = peer_metadata(home)
    nodes = {c["dc"]: c for c in by_kind(status, "node")}
    leader_of = {s["shard"]: s["primary_dc"] for s in status["shards"]}
    customer = "cluster-customer-1"
    slot = slot_of_customer(customer)
    shard = next(s["shard"] for s in status["shards"] for first, last in s["slots"] if first <= slot <= last)
    leader = nodes[leader_of[shard]]
    other = next(n for dc, n in nodes.items() if dc != leader_of[shard])
    request = account_pb2.OpenAccountRequest(
        request_id=str(uuid.uuid4()), customer_id=customer, currency="CNY"
    )
    with grpc.insecure_channel(f"{leader['host']}:{leader['port']}") as channel:
        opened = (
            account_pb2_grpc.AccountServiceStub(channel)
            .OpenAccount(request, timeout=10, metadata=peer)
            .account
        )
    assert opened.slot == slot
    with (
        grpc.insecure_channel(f"{other['host']}:{other['port']}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        account_pb2_grpc.AccountServiceStub(channel).OpenAccount(request, timeout=10, metadata=peer)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(refused.value.trailing_metadata() or ())["bank-error-reason"] == "NOT_LEADER"


def test_up_twice_is_harmless(cluster: tuple[Path, dict[str, Any]]) -> None:
    home, status = cluster
    again = bankctl(home, "up", "--net", status["net"], "--name", "bkt", "--octet", "77")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    listed = bankctl(home, "status", "--json")
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-3000:]
    after = json.loads(listed.stdout)
    assert [c["pid"] for c in after["components"]] == [c["pid"] for c in status["components"]]


def test_down_leaves_nothing_running(tmp_path: Path) -> None:
    """A cluster of its own, so that the shared one above stays up for the other tests."""
    home = tmp_path / "short-lived"
    up = bankctl(home, "up", "--net", "loopback", "--name", "bkd", "--octet", "78", "--shards", "1")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        status = json.loads(bankctl(home, "status", "--json").stdout)
        pids = cluster_pids(status)
        assert len(pids) > 12
        loaded = bankctl(home, "load-accounts", "--count", "50")
        assert loaded.returncode == 0 and (home / "accounts.csv").exists(), loaded.stderr
        (home / "acked").mkdir()
    finally:
        down = bankctl(home, "down")
    assert down.returncode == 0, down.stderr
    # The accounts of a cluster die with it: a later cluster's load must not ask for them.
    assert not (home / "accounts.csv").exists() and not (home / "acked").exists()
    left = [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert left == []
    assert not (home / "cluster.json").exists()
    assert bankctl(home, "down").returncode == 0  # down with nothing running is harmless


def test_failed_up_names_the_component_and_cleans_up(tmp_path: Path) -> None:
    """With dc2's Redis port taken, `up` fails naming that Redis and its log, and stops the rest."""
    home = tmp_path / "doomed"
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.76.2.1", 6379))
    squatter.listen(1)
    try:
        up = bankctl(home, "up", "--net", "loopback", "--name", "bkf", "--octet", "76", "--shards", "1")
    finally:
        squatter.close()
    assert up.returncode == 2, up.stdout[-2000:] + up.stderr[-2000:]
    assert "redis-dc2" in up.stderr and str(home.resolve() / "logs" / "redis-dc2.log") in up.stderr
    assert "stopping what was started" in up.stdout
    assert not (home / "cluster.json").exists()
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(str(home) in part for part in p.info["cmdline"] or [])
    ]
    assert leftovers == []
