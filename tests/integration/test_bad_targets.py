"""A transfer to a bad target is refused the same way wherever the target lives: the same code,
reason and message (but for the account number) within one shard and across shards, through
a single call, the batch API and the coalescing client, and nothing is written on any shard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest

from bank.v1 import account_pb2, ledger_pb2
from bankclient import BankClient
from bankclient.client import REASON_KEY
from services.common.identifiers import make_account_number, slot_of_customer
from tests.eventually import eventually
from tests.integration.cluster_helpers import Cluster
from tests.integration.conftest import rid

SNAPSHOT = """
SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transfers), (SELECT count(*) FROM postings),
       (SELECT count(*) FROM holds), (SELECT count(*) FROM requests), (SELECT count(*) FROM outbox),
       (SELECT md5(string_agg(a::text, ',' ORDER BY account_number)) FROM accounts a)
"""
KINDS = ("unknown", "closed", "frozen", "other currency")


@dataclass
class Targets:
    """A funded CNY source on shard 0, and a target of every bad kind on its shard and on another."""

    source: str
    same: dict[str, str]
    other: dict[str, str]


def shard_map(cluster: Cluster) -> dict[int, int]:
    slots: dict[int, int] = {}
    for shard in cluster.status()["shards"]:
        for first, last in shard["slots"]:
            slots.update({slot: shard["shard"] for slot in range(first, last + 1)})
    return slots


def customer_on(shards: dict[int, int], shard: int, prefix: str) -> str:
    """A customer id whose accounts land on `shard`."""
    return next(f"{prefix}-{i}" for i in range(10_000) if shards[slot_of_customer(f"{prefix}-{i}")] == shard)


def bad_targets(client: BankClient, shards: dict[int, int], shard: int) -> dict[str, str]:
    customer = customer_on(shards, shard, f"bad-target-s{shard}")
    closed = client.open_account(customer, "CNY").account_number
    frozen = client.open_account(customer, "CNY").account_number
    usd = client.open_account(customer, "USD").account_number
    client.call("accounts", "CloseAccount", close_request(closed))
    client.freeze(frozen)
    missing = make_account_number(slot_of_customer(customer), 99_999_999_999)
    return {"unknown": missing, "closed": closed, "frozen": frozen, "other currency": usd}


def close_request(account: str) -> Any:
    return account_pb2.CloseAccountRequest(request_id=rid(), account_number=account)


@pytest.fixture(scope="module")
def client(bank_cluster: Cluster) -> Iterator[BankClient]:
    with bank_cluster.client(deadline_s=10) as made:
        yield made


@pytest.fixture(scope="module")
def targets(bank_cluster: Cluster, client: BankClient) -> Targets:
    shards = shard_map(bank_cluster)
    source = client.open_account(customer_on(shards, 0, "bad-target-source"), "CNY").account_number
    client.deposit(source, 1_000_000, "CNY")
    return Targets(source, bad_targets(client, shards, 0), bad_targets(client, shards, 1))


def snapshot(cluster: Cluster) -> list[Any]:
    return [cluster.sql(shard, SNAPSHOT) for shard in range(3)]


def refusal(err: grpc.RpcError, target: str) -> tuple[str, str, str]:
    """Code, reason and message, the target's number made generic (it differs by design)."""
    reason = dict((m.key, m.value) for m in err.trailing_metadata() or ()).get(REASON_KEY, "")  # type: ignore[attr-defined]
    return err.code().name, str(reason), (err.details() or "").replace(target, "<target>")


def single(client: BankClient, source: str, target: str) -> tuple[str, str, str]:
    with pytest.raises(grpc.RpcError) as refused:
        client.transfer(source, target, 100, "CNY")
    return refusal(refused.value, target)


def in_batch(client: BankClient, source: str, target: str) -> tuple[str, str, str]:
    results = client.create_transfers([(source, target, 100, "CNY", rid())])
    result = results[0]
    assert result.code != "OK", result
    return result.code, result.reason, result.message.replace(target, "<target>")


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_target_is_refused_alike_within_and_across_shards(
    bank_cluster: Cluster, client: BankClient, targets: Targets, kind: str
) -> None:
    assert bank_cluster.check(wait_s=20)["pending_transfers"] == 0
    before = snapshot(bank_cluster)
    within = single(client, targets.source, targets.same[kind])
    across = single(client, targets.source, targets.other[kind])
    assert across == within, (within, across)
    assert within[0] in ("NOT_FOUND", "FAILED_PRECONDITION") and "to_account" in within[2], within
    assert in_batch(client, targets.source, targets.same[kind]) == within
    assert in_batch(client, targets.source, targets.other[kind]) == within
    assert snapshot(bank_cluster) == before


def test_the_coalescing_client_refuses_a_bad_cross_shard_target_per_transfer(
    bank_cluster: Cluster, targets: Targets
) -> None:
    before = snapshot(bank_cluster)
    with BankClient.from_home(bank_cluster.home, deadline_s=10, coalesce_transfers=True) as coalescing:
        for kind in KINDS:
            within = single(coalescing, targets.source, targets.same[kind])
            assert single(coalescing, targets.source, targets.other[kind]) == within, kind
    assert snapshot(bank_cluster) == before


def test_a_target_frozen_after_its_check_is_refunded(bank_cluster: Cluster, client: BankClient) -> None:
    """The asynchronous refund stays for a target that changes between the check and the credit:
    the target's row is held locked (the check reads past it), frozen, and only then released."""
    shards = shard_map(bank_cluster)
    source = client.open_account(customer_on(shards, 0, "late-freeze-source"), "CNY").account_number
    target = client.open_account(customer_on(shards, 1, "late-freeze-target"), "CNY").account_number
    client.deposit(source, 50_000, "CNY")
    member = bank_cluster.primary(1)
    with psycopg.connect(
        host=member["host"], port=member["port"], user="bank", password=bank_cluster.password, dbname="bank",
        connect_timeout=3,
    ) as conn:  # fmt: skip
        conn.execute("SELECT 1 FROM accounts WHERE account_number = %s FOR UPDATE", (target,))
        moved = client.transfer(source, target, 12_345, "CNY")
        assert moved.status == ledger_pb2.TRANSFER_STATUS_PENDING
        conn.execute("UPDATE accounts SET status = 'FROZEN' WHERE account_number = %s", (target,))
        conn.commit()

    def settled() -> Any:
        transfer = client.get_transfer(moved.transfer_id)
        return transfer if transfer.status != ledger_pb2.TRANSFER_STATUS_PENDING else None

    final = eventually(settled, timeout_s=15, what="the refused credit refunded")
    assert final.status == ledger_pb2.TRANSFER_STATUS_FAILED
    assert "ACCOUNT_NOT_ACTIVE" in final.failure_reason
    assert client.get_account(source).balance == 50_000
    assert client.get_account(target).balance == 0
    assert bank_cluster.check(wait_s=10)["reconciled"]
