"""Lose a data center, lose no money: faults under a bounded load of transfers with 5 s deadlines.

After each fault: every shard has a leader again, the bank reconciles, every acknowledged
transfer is booked exactly once (so no write an isolated or paused old primary took after its
successor was elected survived), and the measured recovery time is under 5 s.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest

from bank.v1 import account_pb2, account_pb2_grpc
from bankclient import GatewayUnavailable
from services.common.identifiers import NUM_SLOTS
from tests.integration.cluster_helpers import Cluster, bankctl, peer_metadata
from tests.integration.conftest import report

SHARDS = 3
ACCOUNTS = 30
RTO_LIMIT_S = 5.0
CLIENT_DEADLINE_S = 5.0


def shard_of(account: str) -> int:
    slot = int(account[:4])
    return next(s for s in range(SHARDS) if slot < (s + 1) * NUM_SLOTS // SHARDS)


@dataclass
class Load:
    """Transfers among the accounts from a few threads until stopped (bounded in time)."""

    cluster: Cluster
    accounts: list[str]
    threads: int = 6
    max_s: float = 120.0
    acked: dict[str, str] = field(default_factory=dict)  # request id -> transfer id
    failed: dict[str, str] = field(default_factory=dict)  # request id -> status code
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Every run's request ids are its own, so that runs never answer each other's retries.
    prefix: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")

    workers: list[threading.Thread] = field(default_factory=list)

    def run(self) -> None:
        self.workers = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for worker in self.workers:
            worker.start()

    def finish(self) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=30)
        assert not any(worker.is_alive() for worker in self.workers)

    def _work(self, index: int) -> None:
        rng = random.Random(index)
        deadline = time.monotonic() + self.max_s
        with self.cluster.client(deadline_s=CLIENT_DEADLINE_S) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                source, target = rng.sample(self.accounts, 2)
                request_id = f"{self.prefix}-{index}-{rng.getrandbits(64):016x}"
                try:
                    answer = client.transfer(
                        source, target, rng.randint(1, 100), "CNY", request_id=request_id
                    )
                except (grpc.RpcError, GatewayUnavailable) as err:
                    code = err.code().name if isinstance(err, grpc.RpcError) else "NO_GATEWAY"
                    with self.lock:
                        self.failed[request_id] = code
                    continue
                with self.lock:
                    self.acked[request_id] = answer.transfer_id

    def share_failed(self) -> float:
        total = len(self.acked) + len(self.failed)
        return len(self.failed) / total if total else 0.0


@pytest.fixture(scope="module")
def accounts(cluster: Cluster) -> list[str]:
    numbers = []
    with cluster.client() as client:
        for i in range(ACCOUNTS):
            account = client.open_account(f"chaos-customer-{i}", "CNY").account_number
            client.deposit(account, 1_000_000, "CNY")
            numbers.append(account)
    assert {shard_of(a) for a in numbers} == set(range(SHARDS))
    return numbers


def chaos(cluster: Cluster, *args: str) -> dict[str, object]:
    done = bankctl(cluster.home, "chaos", "--json", *args, timeout_s=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(done.stdout[done.stdout.index("{") :]))


def leader_of(cluster: Cluster, shard: int) -> str:
    return str(next(s["primary_dc"] for s in cluster.status()["shards"] if s["shard"] == shard))


def verify(cluster: Cluster, load: Load) -> None:
    """Leaders everywhere, the bank reconciles, every acknowledged transfer booked exactly once."""
    deadline = time.monotonic() + 60
    while True:
        status = cluster.status()
        primaries = [c for c in status["components"] if c["kind"] == "postgres" and c["role"] == "primary"]
        if sorted(c["shard"] for c in primaries) == list(range(SHARDS)) and all(
            c["healthy"] for c in status["components"]
        ):
            break
        assert time.monotonic() < deadline, f"the cluster did not settle: {status['components']}"
        time.sleep(0.5)
    books = cluster.check(wait_s=60)
    assert books["reconciled"] and books["pending_transfers"] == 0, books

    booked: Counter[str] = Counter()
    debits: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for shard in range(SHARDS):
        for (request_id,) in cluster.sql(
            shard, "SELECT request_id FROM transfers WHERE request_id LIKE %s", (f"{load.prefix}-%",)
        ):
            booked[request_id] += 1
        for transfer_id, amount in cluster.sql(
            shard,
            "SELECT p.transfer_id, p.amount FROM postings p JOIN transfers t USING (transfer_id)"
            " WHERE p.account_number NOT LIKE 'SYS:%%' AND t.kind = 'TRANSFER'",
        ):
            (debits if amount < 0 else credits)[transfer_id] += 1
    lost = [r for r in load.acked if booked[r] != 1]
    assert lost == [], f"acknowledged transfers not booked exactly once: {lost[:10]}"
    unexplained = [r for r in booked if r not in load.acked and r not in load.failed]
    assert unexplained == [], f"booked transfers nobody asked for: {unexplained[:10]}"
    acked_ids = set(load.acked.values())
    assert all(debits[t] == 1 and credits[t] == 1 for t in acked_ids)


def wait_for_progress(load: Load, more: int, timeout_s: float = 60) -> None:
    """Waits until `more` transfers beyond the current count are acknowledged."""
    target = len(load.acked) + more
    deadline = time.monotonic() + timeout_s
    while len(load.acked) < target:
        assert time.monotonic() < deadline, f"the load stalled at {len(load.acked)} acknowledged transfers"
        time.sleep(0.05)


def run_fault(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config, inject: list[str], undo: list[str]
) -> dict[str, object]:
    load = Load(cluster, accounts)
    load.run()
    wait_for_progress(load, 100)  # the fault strikes a bank under load
    entry = chaos(cluster, *inject)
    wait_for_progress(load, 100)  # and the load goes on through the recovery
    if undo:
        done = bankctl(cluster.home, "chaos", *undo, timeout_s=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        wait_for_progress(load, 100)
    load.finish()
    report(
        pytestconfig,
        f"\n[chaos] {' '.join(inject)}: RTO per shard {entry['shards']},"
        f" requests {len(load.acked)} acknowledged, {len(load.failed)} failed ({load.share_failed():.1%})"
        f" {dict(Counter(load.failed.values()))}",
    )
    verify(cluster, load)
    rtos = [v for v in entry["shards"].values()]  # type: ignore[attr-defined]
    assert all(v is not None and v < RTO_LIMIT_S for v in rtos), entry
    return entry


def test_kill_dc_then_restart(cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config) -> None:
    dc = leader_of(cluster, 0)
    entry = run_fault(cluster, accounts, pytestconfig, ["kill-dc", dc], ["restart-dc", dc])
    assert "0" in entry["shards"]  # type: ignore[operator]
    assert leader_of(cluster, 0) != dc  # no automatic failback: the restarted DC follows


def test_isolate_dc_then_heal(cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config) -> None:
    dc = leader_of(cluster, 1)
    entry = run_fault(cluster, accounts, pytestconfig, ["isolate-dc", dc], ["heal"])
    assert "1" in entry["shards"]  # type: ignore[operator]
    assert leader_of(cluster, 1) != dc  # its successor keeps the lead after the heal


def test_pause_leader_node_longer_than_its_session(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config
) -> None:
    dc = leader_of(cluster, 2)
    node = next(c for c in cluster.components("node") if c["dc"] == dc)
    run_fault(cluster, accounts, pytestconfig, ["pause-node", dc, "--seconds", "5"], [])
    assert leader_of(cluster, 2) != dc
    # The resumed old leader must refuse the shard it lost (it is fenced by epoch and route).
    victim = next(a for a in accounts if shard_of(a) == 2)
    with (
        grpc.insecure_channel(f"{node['host']}:{node['port']}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        account_pb2_grpc.AccountServiceStub(channel).GetAccount(
            account_pb2.GetAccountRequest(account_number=victim),
            timeout=5,
            metadata=peer_metadata(cluster.home),
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_switchover_under_load_loses_no_request(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config
) -> None:
    load = Load(cluster, accounts)
    load.run()
    wait_for_progress(load, 100)
    origin = leader_of(cluster, 0)
    target = next(dc for dc in ("dc1", "dc2", "dc3") if dc != origin)
    for to_dc in (target, origin):
        done = bankctl(cluster.home, "switchover", "0", "--to", to_dc, timeout_s=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert leader_of(cluster, 0) == to_dc
        wait_for_progress(load, 100)
    load.finish()
    report(
        pytestconfig,
        f"\n[chaos] switchover of shard 0 {origin} -> {target} -> {origin} under load: {len(load.acked)}"
        f" acknowledged, {len(load.failed)} failed",
    )
    assert load.failed == {}
    verify(cluster, load)


def test_dc_failover_scenario_report(cluster: Cluster, tmp_path: Path) -> None:
    """A short dc-failover run headless: the report's figures are there and honest, and the
    HTML report's images exist."""
    assert bankctl(cluster.home, "load-accounts", "--count", "3000").returncode == 0
    done = bankctl(
        cluster.home, "scenario", "dc-failover", "--duration", "30", "--users", "12", "--fault-at", "10",
        "--restart-at", "20", "--reports", str(tmp_path), timeout_s=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = list(tmp_path.iterdir())
    data = json.loads((run / "report.json").read_text())
    assert data["acked_lost"] == 0 and data["duplicates"] == 0 and data["invariant_ok"] is True
    assert data["acked_transfers"] > 100 and data["throughput_tps"] > 0
    assert data["requests"]["total"] > data["requests"]["failed"] >= 0
    assert 0.9 < data["availability"] <= 1.0
    assert {"p50", "p95", "p99"} <= set(data["latency_ms"])
    (failover,) = data["failovers"]
    assert (
        failover["fault"] == "kill-dc" and failover["rto_s"] is not None and failover["rto_s"] < RTO_LIMIT_S
    )
    cost = data["cost"]
    assert cost["per_account_year_cny"] > 0 and {"cpu_cny", "memory_cny", "disk_cny"} == set(
        cost["breakdown"]
    )
    assert cost["assumptions"]["profile_accounts"] > 0
    page = (run / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 3 and all((run / image).stat().st_size > 1000 for image in images)


def test_kill_node_then_heal_keeps_the_new_node_in_the_record(cluster: Cluster) -> None:
    """heal restarts the node; the record must name the new process, or `down` would leak it."""
    dc = leader_of(cluster, 1)
    chaos(cluster, "kill-node", dc)
    healed = bankctl(cluster.home, "chaos", "heal")
    assert healed.returncode == 0, healed.stderr[-2000:]
    node = next(c for c in cluster.components("node") if c["dc"] == dc)
    assert node["healthy"]
    running = [
        p.pid for p in psutil.process_iter(["cmdline"])
        if any(f"node-{dc}.json" in part and str(cluster.home) in part for part in p.info["cmdline"] or [])
    ]  # fmt: skip
    assert running == [node["pid"]]
