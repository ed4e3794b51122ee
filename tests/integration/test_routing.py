"""Routing by slot through every DC's gateway, cross-shard transfers delivered exactly once, and
the whole-bank check, on a 3-DC x 3-shard cluster of real processes."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from hypothesis import HealthCheck, given, settings

from bank.v1 import ledger_pb2
from services.common.identifiers import NUM_SLOTS, slot_of_account, slot_of_customer, slot_of_routed_id
from services.common.routes import RoutingTable
from services.routing import redis_mirror
from services.routing.client import RoutingClient
from tests.integration import hostile
from tests.integration.cluster_helpers import Cluster, bankctl, secrets
from tests.integration.conftest import report

SHARDS = 3
ACCOUNTS = 200
OPENING = 1_000_000  # 10,000.00 CNY each
TRANSFERS = 5_000


def shard_of(slot: int) -> int:
    """The launcher's default slot map: near-equal contiguous ranges."""
    return next(s for s in range(SHARDS) if slot < (s + 1) * NUM_SLOTS // SHARDS)


@pytest.fixture(scope="module")
def cluster(bank_cluster: Cluster) -> Cluster:
    return bank_cluster


@pytest.fixture(scope="module")
def accounts(cluster: Cluster) -> list[str]:
    """200 funded accounts opened through the three gateways in turn."""
    clients = [cluster.client(prefer_dc=dc) for dc in ("dc1", "dc2", "dc3")]
    numbers = []
    try:
        for i in range(ACCOUNTS):
            client = clients[i % 3]
            account = client.open_account(f"routing-customer-{i}", "CNY")
            client.deposit(account.account_number, OPENING, "CNY")
            numbers.append(account.account_number)
    finally:
        for client in clients:
            client.close()
    return numbers


def test_accounts_land_on_the_shard_their_slot_names(cluster: Cluster, accounts: list[str]) -> None:
    by_shard: dict[int, set[str]] = {s: set() for s in range(SHARDS)}
    for shard in range(SHARDS):
        by_shard[shard] = {row[0] for row in cluster.sql(shard, "SELECT account_number FROM accounts")}
    for number in accounts:
        assert number in by_shard[shard_of(slot_of_account(number))], number
    assert all(by_shard[s] for s in range(SHARDS)), "every shard holds accounts"
    assert sum(len(v) for v in by_shard.values()) == len(set().union(*by_shard.values()))  # no account twice


def test_concurrent_transfers_through_all_gateways_reconcile_exactly_once(
    cluster: Cluster, accounts: list[str], pytestconfig: pytest.Config
) -> None:
    rng = random.Random(4)
    plan = []
    for i in range(TRANSFERS):
        source, target = rng.sample(accounts, 2)
        plan.append((i, source, target, rng.randint(1, 5_000)))
    clients = [cluster.client(prefer_dc=dc) for dc in ("dc1", "dc2", "dc3")]
    acked: dict[str, tuple[str, str, int]] = {}
    refused: Counter[str] = Counter()
    lock = threading.Lock()

    def send(item: tuple[int, str, str, int]) -> None:
        i, source, target, amount = item
        try:
            answer = clients[i % 3].transfer(source, target, amount, "CNY")
        except grpc.RpcError as err:
            with lock:
                refused[err.code().name] += 1
            return
        with lock:
            acked[answer.transfer_id] = (source, target, amount)

    started = time.monotonic()
    with ThreadPoolExecutor(48) as pool:
        list(pool.map(send, plan))
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()
    cross = sum(
        1 for s, t, _ in acked.values() if shard_of(slot_of_account(s)) != shard_of(slot_of_account(t))
    )
    report(
        pytestconfig,
        f"\n[routing] {TRANSFERS} transfers via 3 gateways, 48 at a time: {elapsed:.1f} s "
        f"({TRANSFERS / elapsed:.0f}/s), {len(acked)} acknowledged ({cross} cross-shard),"
        f" refused {dict(refused)}",
    )
    assert set(refused) <= {"FAILED_PRECONDITION"}
    assert len(acked) > TRANSFERS * 0.95

    books = cluster.check(wait_s=30)
    assert books["reconciled"], books
    assert books["pending_transfers"] == 0
    # The cluster is shared with other modules' tests: this test's own accounts hold what they did.
    held = sum(
        int(cluster.sql(s, "SELECT coalesce(sum(balance), 0) FROM accounts WHERE account_number = ANY(%s)",
                        (accounts,))[0][0])
        for s in range(SHARDS)
    )  # fmt: skip
    assert held == ACCOUNTS * OPENING

    # Exactly once: every acknowledged transfer is booked once on its source shard and, when
    # it crossed shards, credited once on its target shard. (Only transfers from this test's
    # accounts: the cluster is shared with other modules' tests.)
    debits: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    statuses: dict[str, str] = {}
    for shard in range(SHARDS):
        for transfer_id, _account, amount in cluster.sql(
            shard,
            "SELECT transfer_id, account_number, amount FROM postings WHERE account_number NOT LIKE 'SYS:%%'"
            " AND transfer_id IN (SELECT transfer_id FROM transfers WHERE kind = 'TRANSFER'"
            " AND from_account = ANY(%s))",
            (accounts,),
        ):
            (debits if amount < 0 else credits)[transfer_id] += 1
        for transfer_id, status in cluster.sql(
            shard,
            "SELECT transfer_id, status FROM transfers WHERE kind = 'TRANSFER' AND from_account = ANY(%s)",
            (accounts,),
        ):
            if shard == shard_of(slot_of_routed_id(transfer_id)):
                statuses[transfer_id] = status
    assert set(statuses) == set(acked), "booked transfers are exactly the acknowledged ones"
    assert set(statuses.values()) == {"COMMITTED"}
    assert all(debits[t] == 1 and credits[t] == 1 for t in acked)
    assert set(debits) == set(credits) == set(acked)


def test_get_transfer_through_any_gateway(cluster: Cluster, accounts: list[str]) -> None:
    source = accounts[0]
    target = next(a for a in accounts if shard_of(slot_of_account(a)) != shard_of(slot_of_account(source)))
    with cluster.client("dc1") as first:
        moved = first.transfer(source, target, 1, "CNY")
    assert moved.status in (ledger_pb2.TRANSFER_STATUS_PENDING, ledger_pb2.TRANSFER_STATUS_COMMITTED)
    for dc in ("dc1", "dc2", "dc3"):
        with cluster.client(dc) as client:
            deadline = time.monotonic() + 10
            while client.get_transfer(moved.transfer_id).status == ledger_pb2.TRANSFER_STATUS_PENDING:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert client.get_transfer(moved.transfer_id).status == ledger_pb2.TRANSFER_STATUS_COMMITTED


def test_killed_target_node_loses_and_doubles_nothing(cluster: Cluster, accounts: list[str]) -> None:
    target_shard = 1
    leader_dc = next(s["primary_dc"] for s in cluster.status()["shards"] if s["shard"] == target_shard)
    node = next(c for c in cluster.components("node") if c["dc"] == leader_dc)
    targets = [a for a in accounts if shard_of(slot_of_account(a)) == target_shard][:20]
    sources = [a for a in accounts if shard_of(slot_of_account(a)) != target_shard][:20]
    before = {t: balance_of(cluster, t) for t in targets}
    acked: dict[str, tuple[str, int]] = {}
    source_dc = next(dc for dc in ("dc1", "dc2", "dc3") if dc != leader_dc)
    with cluster.client(source_dc) as client:
        for i in range(120):
            if i == 40:
                os.kill(node["pid"], signal.SIGKILL)  # credits are in flight now
            target, amount = targets[i % len(targets)], 100 + i
            answer = client.transfer(sources[i % len(sources)], target, amount, "CNY")
            acked[answer.transfer_id] = (target, amount)
    pending = sum(1 for _ in acked)  # all were acknowledged by the sources' shards
    assert pending == 120
    restarted = bankctl(cluster.home, "restart-node", leader_dc)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    books = cluster.check(wait_s=30)
    assert books["reconciled"] and books["pending_transfers"] == 0, books
    expected = dict(before)
    for target, amount in acked.values():
        expected[target] += amount
    assert {t: balance_of(cluster, t) for t in targets} == expected
    credited = Counter(
        row[0]
        for row in cluster.sql(
            target_shard,
            "SELECT transfer_id FROM postings WHERE amount > 0 AND account_number NOT LIKE 'SYS:%%'"
            " AND transfer_id = ANY(%s)",
            (list(acked),),
        )
    )
    assert set(credited) == set(acked) and set(credited.values()) == {1}


def balance_of(cluster: Cluster, account: str) -> int:
    rows = cluster.sql(
        shard_of(slot_of_account(account)),
        "SELECT balance FROM accounts WHERE account_number = %s",
        (account,),
    )
    return int(rows[0][0])


def test_routing_changes_reach_subscribers_and_older_tables_are_ignored(cluster: Cluster) -> None:
    redis_dc1 = next(c for c in cluster.components("redis") if c["role"] == "primary")
    local = next(c for c in cluster.components("redis") if c["role"] == "replica")
    zk = ",".join(f"{c['host']}:{c['port']}" for c in cluster.components("zookeeper"))
    keys = secrets(cluster.home)
    routing = RoutingClient(
        local["host"], local["port"], zk, refresh_interval_s=30, redis_password=keys["redis_password"],
        zk_auth=keys["zk_auth"],
    )  # fmt: skip
    routing.start()
    try:
        current = routing.table
        assert current.version > 0 and len(current.routes) == SHARDS
        newer = RoutingTable(current.version + 1, current.slot_ranges, current.routes)
        primary = redis.Redis(host=redis_dc1["host"], port=redis_dc1["port"], password=keys["redis_password"])
        assert redis_mirror.publish(primary, newer)
        deadline = time.monotonic() + 5
        while routing.table.version != newer.version:  # pushed through the replica's channel
            assert time.monotonic() < deadline, "the change never reached the subscriber"
            time.sleep(0.01)
        assert not redis_mirror.publish(primary, current)  # an older table never replaces a newer one
        assert redis_mirror.read(primary).version == newer.version  # type: ignore[union-attr]
        primary.close()
    finally:
        routing.stop()


def test_slot_of_customer_is_what_the_cluster_uses(cluster: Cluster) -> None:
    with cluster.client() as client:
        account = client.open_account("routing-slot-check", "USD")
    assert account.slot == slot_of_customer("routing-slot-check")
    shard = shard_of(account.slot)
    assert cluster.sql(
        shard, "SELECT slot FROM accounts WHERE account_number = %s", (account.account_number,)
    ) == [(account.slot,)]


def test_bulk_loaded_accounts_are_real_accounts(cluster: Cluster) -> None:
    loaded = bankctl(cluster.home, "load-accounts", "--count", "3000", "--balance", "50000")
    assert loaded.returncode == 0, loaded.stdout[-2000:] + loaded.stderr[-2000:]
    assert "3,000/3,000 accounts (100%)" in loaded.stdout
    rows = [line.split(",") for line in (cluster.home / "accounts.csv").read_text().split()]
    assert len(rows) == 3000 and len({r[0] for r in rows}) == 3000
    assert {int(r[1]) for r in rows} == set(range(SHARDS))
    assert all(shard_of(int(slot)) == int(shard) for _, shard, slot in rows)
    books = cluster.check(wait_s=10)
    assert books["reconciled"], books
    rng = random.Random(9)
    with cluster.client("dc3") as client:
        for number, _, _ in rng.sample(rows, 20):
            assert client.get_account(number).balance == 50_000
        source, target = rows[0][0], rows[-1][0]
        moved = client.transfer(source, target, 1_234, "CNY")
        assert moved.transfer_id
        assert client.get_account(source).balance == 50_000 - 1_234


@pytest.mark.parametrize("route", ["gateway", "direct"])
def test_locust_banking_mix_headless_and_audit(
    cluster: Cluster, pytestconfig: pytest.Config, route: str
) -> None:
    """The load harness drives every operation of the mix, through the gateways or routed by its
    users themselves; every acknowledged movement is booked once."""
    if route == "gateway":
        assert bankctl(cluster.home, "load-accounts", "--count", "2000").returncode == 0
    for old in (cluster.home / "acked").glob("*.log"):
        old.unlink()  # this run's acknowledgements only
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--bank-home", str(cluster.home),
         "--headless", "-u", "16", "-r", "16", "-t", "10s", "--csv", str(cluster.home / "locust"),
         "--only-summary", "--route", route],
        capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    stats = list(csv.DictReader((cluster.home / "locust_stats.csv").read_text().splitlines()))
    names = {row["Name"] for row in stats}
    assert {"GetAccount", "Transfer", "ListPostings", "Deposit", "Withdraw", "CreateHold"} <= names
    total = next(row for row in stats if row["Name"] == "Aggregated")
    requests, failed, rate = total["Request Count"], total["Failure Count"], float(total["Requests/s"])
    report(pytestconfig, f"\n[routing] locust 16 users 10 s, route {route}: {requests} requests, "
                         f"{rate:.0f}/s, {failed} failed")  # fmt: skip
    assert int(total["Request Count"]) > 200 and int(total["Failure Count"]) == 0
    acked = [t for f in (cluster.home / "acked").glob("*.log") for t in f.read_text().split()]
    assert len(acked) > 100
    found: Counter[str] = Counter()
    for shard in range(SHARDS):
        mine = [t for t in acked if shard_of(slot_of_routed_id(t)) == shard]
        for (transfer_id,) in cluster.sql(
            shard, "SELECT transfer_id FROM transfers WHERE transfer_id = ANY(%s)", (mine,)
        ):
            found[transfer_id] += 1
    assert set(found) == set(acked) and set(found.values()) == {1}
    assert cluster.check(wait_s=20)["reconciled"]


@pytest.mark.parametrize("route", ["gateway", "direct"])
def test_hostile_requests_get_proper_statuses_and_the_books_follow(cluster: Cluster, route: str) -> None:
    """Generated hostile requests (2,000 through a gateway, 500 routed by the client to the nodes
    themselves): never UNKNOWN or INTERNAL, and the money that entered or left the bank is
    exactly what was acknowledged."""
    examples = 2000 if route == "gateway" else 500
    if not (cluster.home / "accounts.csv").exists():
        assert bankctl(cluster.home, "load-accounts", "--count", "500").returncode == 0
    accounts = [line.split(",")[0] for line in (cluster.home / "accounts.csv").read_text().split()][:60]
    before = cluster.check(wait_s=30)["currencies"]
    moved: Counter[str] = Counter()  # currency -> net money acknowledged in (deposits) or out
    codes: Counter[str] = Counter()
    client = cluster.client(deadline_s=10, route=route)

    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(hostile.requests(accounts))
    def send(call: tuple[str, str, Any]) -> None:
        service, method, request = call
        try:
            client.call(service, method, request)
        except grpc.RpcError as err:
            codes[err.code().name] += 1
            assert err.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
                method,
                request,
                err,
            )
            return
        codes["OK"] += 1
        if method in ("Deposit", "Withdraw"):
            sign = 1 if method == "Deposit" else -1
            # A retried request id returns the first result: count each acknowledged id once.
            moved[request.currency] += 0 if request.request_id in seen else sign * amount_of(request)
            seen.add(request.request_id)

    seen: set[str] = set()
    try:
        send()
    finally:
        client.close()
    assert sum(codes.values()) >= examples and codes["OK"] > 0, codes
    if client.direct is not None:  # those it could route were answered by the nodes themselves
        assert client.direct.direct_calls > examples // 4, (client.direct.direct_calls, codes)
    after = cluster.check(wait_s=30)
    assert after["reconciled"], after
    for currency, change in moved.items():
        old = before.get(currency, {"deposited_minus_withdrawn": 0})["deposited_minus_withdrawn"]
        assert after["currencies"][currency]["deposited_minus_withdrawn"] - old == change


def amount_of(request: Any) -> int:
    from services.rpc.convert import amount_of as convert

    return convert(request)
