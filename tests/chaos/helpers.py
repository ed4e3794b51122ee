"""A bounded load of transfers, faults injected through bankctl, and the checks after them:
shared by the single-fault tests and the dashboards test."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc
import pytest

from bankclient import GatewayUnavailable
from services.common.identifiers import NUM_SLOTS, slot_of_account
from tests.integration.cluster_helpers import Cluster, bankctl
from tests.integration.conftest import report

SHARDS = 3
ACCOUNTS = 30
RTO_LIMIT_S = 5.0
CLIENT_DEADLINE_S = 5.0


def shard_of(account: str) -> int:
    slot = slot_of_account(account)
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
