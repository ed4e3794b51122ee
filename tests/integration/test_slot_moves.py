"""Moving slots between shards while money moves: `bankctl move-slots` copies, freezes, verifies
and flips; nothing acknowledged is lost or doubled, no client operation fails, the books
reconcile, a moved account's statement is complete on its new shard, a retry answered before
the move gets the same answer after it, and account numbers stay unique."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any

import grpc
import pytest

from bank.v1 import ledger_pb2
from bankclient import BankClient
from services.common.identifiers import slot_of_customer
from tests.integration.cluster_helpers import Cluster, bankctl
from tests.integration.conftest import report

MOVING = (0, 31)  # on shard 0 in the default map
SLOTS = f"{MOVING[0]}-{MOVING[1]}"
STAYING_SLOT = 200  # shard 0 too
OTHER_SHARD_SLOT = 500  # shard 1


# The debits of customer accounts in slots a shard holds (a moved slot's rows are gone by then).
DEBITS = """
SELECT transfer_id FROM postings
WHERE transfer_id = ANY(%s) AND amount < 0 AND account_number NOT LIKE 'SYS:%%'
"""
STATES = "SELECT state, count(*) FROM slot_state WHERE slot BETWEEN %s AND %s GROUP BY 1"
LEFT = "SELECT count(*) FROM accounts WHERE slot BETWEEN %s AND %s"


def customers_in(first: int, last: int, count: int, prefix: str) -> list[str]:
    found = [f"{prefix}-{i}" for i in range(200_000) if first <= slot_of_customer(f"{prefix}-{i}") <= last]
    return found[:count]


def statement(client: BankClient, account: str) -> list[Any]:
    lines: list[Any] = []
    token = ""
    while True:
        page = client.call(
            "ledger", "ListPostings",
            ledger_pb2.ListPostingsRequest(account_number=account, page_token=token, page_size=100),
        )  # fmt: skip
        lines += list(page.postings)
        token = page.next_page_token
        if not token:
            return lines


def shard_owning(cluster: Cluster, slot: int) -> int:
    for shard in cluster.status()["shards"]:
        if any(a <= slot <= b for a, b in shard["slots"]):
            return int(shard["shard"])
    raise AssertionError(f"slot {slot} has no shard")


class Load(threading.Thread):
    """Transfers among the accounts until stopped, each with a 5 s deadline; every outcome kept."""

    def __init__(self, client: BankClient, accounts: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.client, self.accounts, self.random = client, accounts, random.Random(seed)
        self.acked: dict[str, tuple[str, str, int]] = {}
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            source, target = self.random.sample(self.accounts, 2)
            amount = self.random.randint(1, 500)
            try:
                moved = self.client.transfer(source, target, amount, "CNY", deadline_s=5)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.FAILED_PRECONDITION:  # insufficient funds is an answer
                    self.failed.append(f"{err.code().name}: {err.details()}")
                continue
            self.acked[moved.transfer_id] = (source, target, amount)


@pytest.fixture(scope="module")
def accounts(bank_cluster: Cluster) -> dict[str, list[str]]:
    with bank_cluster.client(deadline_s=10) as client:
        made = {
            "moving": customers_in(*MOVING, 12, "mover-m"),
            "staying": customers_in(STAYING_SLOT, STAYING_SLOT + 20, 4, "mover-s"),
            "other": customers_in(OTHER_SHARD_SLOT, OTHER_SHARD_SLOT + 20, 4, "mover-o"),
        }
        numbers: dict[str, list[str]] = {}
        for group, customers in made.items():
            numbers[group] = [client.open_account(c, "CNY").account_number for c in customers]
            for number in numbers[group]:
                client.deposit(number, 100_000, "CNY")
    return numbers


def test_moving_slots_under_load_loses_doubles_and_fails_nothing(
    bank_cluster: Cluster, accounts: dict[str, list[str]], pytestconfig: pytest.Config
) -> None:
    everyone = [a for group in accounts.values() for a in group]
    assert shard_owning(bank_cluster, MOVING[0]) == 0
    with bank_cluster.client(deadline_s=10) as client:
        answered_before = client.transfer(
            accounts["moving"][0], accounts["other"][0], 123, "CNY", request_id="move-retry-1"
        )
        loads = [Load(BankClient.from_home(bank_cluster.home, prefer_dc=dc, deadline_s=5), everyone, seed)
                 for seed, dc in enumerate(("dc1", "dc2", "dc3"))]  # fmt: skip
        for load in loads:
            load.start()
        time.sleep(2)
        started = time.monotonic()
        done = bankctl(
            bank_cluster.home, "move-slots", "--slots", f"{MOVING[0]}-{MOVING[1]}", "--to", "1", "--json"
        )
        took = time.monotonic() - started
        time.sleep(2)
        for load in loads:
            load.stop.set()
        for load in loads:
            load.join(timeout=15)
            load.client.close()
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        record = json.loads(done.stdout[done.stdout.index("{") :])
        acked = {tid: t for load in loads for tid, t in load.acked.items()}
        failed = [f for load in loads for f in load.failed]
        report(
            pytestconfig,
            f"\n[moves] slots {SLOTS} 0 -> 1 in {took:.1f} s: freeze {record['freeze_ms']} ms,"
            f" {record['copied_rows']} rows; {len(acked)} transfers acknowledged, {len(failed)} failed",
        )
        assert record["state"] == "done" and record["freeze_ms"] < 2000, record
        assert failed == [], failed[:5]
        assert len(acked) > 50
        assert shard_owning(bank_cluster, MOVING[0]) == 1 and shard_owning(bank_cluster, MOVING[1]) == 1

        books = bank_cluster.check(wait_s=30)
        assert books["reconciled"] and books["pending_transfers"] == 0, books
        # Every acknowledged transfer is booked once, with its amount on its two accounts.
        for tid in random.Random(1).sample(sorted(acked), min(60, len(acked))):
            transfer = client.get_transfer(tid)
            assert transfer.status == ledger_pb2.TRANSFER_STATUS_COMMITTED
            assert (transfer.from_account, transfer.to_account, transfer.amount) == acked[tid]
        # A moved account's statement is complete and in order on its new shard.
        for account in accounts["moving"]:
            lines = statement(client, account)
            balance = client.get_account(account).balance
            assert sum(line.amount for line in lines) == balance
            assert lines[-1].balance_after == balance
            running = 0
            for line in lines:
                running += line.amount
                assert line.balance_after == running
        # A retry of a request answered before the move gets the same answer after it.
        again = client.transfer(
            accounts["moving"][0], accounts["other"][0], 123, "CNY", request_id="move-retry-1"
        )
        assert again.transfer_id == answered_before.transfer_id
        # Account numbers stay unique: a new account in a moved slot continues its slot's serials.
        newcomer = client.open_account(customers_in(*MOVING, 1, "mover-late")[0], "CNY").account_number
        assert newcomer not in everyone and shard_owning(bank_cluster, int(newcomer[:4])) == 1
    debits: Counter[str] = Counter()
    for shard in range(3):
        debits.update(r[0] for r in bank_cluster.sql(shard, DEBITS, (list(acked),)))
    assert set(debits) == set(acked) and set(debits.values()) == {1}  # each booked once, on one shard
    states = dict(bank_cluster.sql(0, STATES, MOVING))
    assert states == {"GONE": 32}
    left = bank_cluster.sql(0, LEFT, MOVING)
    assert left == [(0,)]  # removed from the source after the grace period


def test_moving_the_slots_back_restores_the_map_and_the_books(bank_cluster: Cluster) -> None:
    done = bankctl(bank_cluster.home, "move-slots", "--slots", SLOTS, "--to", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert shard_owning(bank_cluster, MOVING[0]) == 0
    books = bank_cluster.check(wait_s=30)
    assert books["reconciled"], books
    moves = bank_cluster.status()["moves"]
    assert [m["state"] for m in moves[-2:]] == ["done", "done"]


def test_a_move_of_slots_spanning_two_shards_is_refused(bank_cluster: Cluster) -> None:
    done = bankctl(bank_cluster.home, "move-slots", "--slots", "300-400", "--to", "2")
    assert done.returncode == 2 and "span shards" in done.stderr, done.stderr
