"""Direct routing on a real cluster (`BankClient(route="direct")`): the client calls its shard's
leader node itself, and what it is answered is what a gateway would answer: the same results,
refusals (code, reason, message), idempotent replays, cross-shard transfers booked once, and hot
accounts that stay exact under 2,000 concurrent transfers. Batches and coalescing through
direct routing: tests/integration/test_batches.py (both routes)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from bank.v1 import ledger_pb2
from bankclient import BankClient
from services.cluster.topology import ClusterSpec
from services.common.identifiers import slot_of_account, slot_of_customer
from tests.eventually import eventually
from tests.integration.cluster_helpers import Cluster
from tests.integration.conftest import rid

HOT = 4
TRANSFERS = 2_000
THREADS = 32
OPENING = 100_000


def shard_of(account: str) -> int:
    return ClusterSpec().shard_of_slot(slot_of_account(account))


def customers_on(shard: int, prefix: str, count: int) -> list[str]:
    names = (f"{prefix}-{i}" for i in range(10_000))
    return [c for c in names if ClusterSpec().shard_of_slot(slot_of_customer(c)) == shard][:count]


def outcome(call: Any) -> tuple[str, str, str]:
    """(code, reason, message) of a call that is refused; ("OK", "", "") when it is not."""
    try:
        call()
    except grpc.RpcError as err:
        reason = next((m.value for m in err.trailing_metadata() or () if m.key == "bank-error-reason"), "")
        return err.code().name, reason, err.details() or ""
    return "OK", "", ""


def test_direct_answers_are_the_gateways_answers(bank_cluster: Cluster) -> None:
    home = bank_cluster.home
    with (
        BankClient.from_home(home, deadline_s=30) as gateway,
        BankClient.from_home(home, deadline_s=30, route="direct") as direct,
    ):
        assert direct.direct is not None
        a, b = (direct.open_account(c, "CNY").account_number for c in customers_on(0, "direct-ab", 2))
        (c,) = (direct.open_account(x, "CNY").account_number for x in customers_on(1, "direct-c", 1))
        direct.deposit(a, 1_000, "CNY")
        same = direct.transfer(a, b, 100, "CNY")
        replay_id = rid()
        crossing = direct.transfer(a, c, 200, "CNY", request_id=replay_id)
        # A replay answers the first result, whichever way it comes, and books nothing more.
        assert direct.transfer(a, c, 200, "CNY", request_id=replay_id).transfer_id == crossing.transfer_id
        assert gateway.transfer(a, c, 200, "CNY", request_id=replay_id).transfer_id == crossing.transfer_id
        committed = ledger_pb2.TRANSFER_STATUS_COMMITTED
        eventually(lambda: direct.get_transfer(crossing.transfer_id).status == committed, 30, "the credit")
        assert [direct.get_account(x).balance for x in (a, b, c)] == [700, 100, 200]
        assert direct.get_transfer(same.transfer_id) == gateway.get_transfer(same.transfer_id)
        answered_by_nodes = direct.direct.direct_calls
        assert answered_by_nodes >= 12 and direct.direct.redirected == 0, vars(direct.direct)

        refusals: dict[str, Any] = {
            "insufficient funds": lambda cl: cl.transfer(a, b, 10**6, "CNY"),
            "zero amount": lambda cl: cl.transfer(a, b, 0, "CNY"),
            "wrong check digit": lambda cl: cl.transfer(a, b[:-1] + str((int(b[-1]) + 1) % 10), 5, "CNY"),
            "not a number": lambda cl: cl.transfer("12", b, 5, "CNY"),
            "other currency": lambda cl: cl.transfer(a, c, 5, "EUR"),
            "no such account": lambda cl: cl.get_account(a[:4] + "0" * 11 + a[-1]),
            "to itself": lambda cl: cl.transfer(a, a, 5, "CNY"),
            "no request id": lambda cl: cl.call(
                "ledger", "Deposit", ledger_pb2.DepositRequest(account_number=a, amount=5, currency="CNY")
            ),
        }
        through_nodes = {what: outcome(lambda f=f: f(direct)) for what, f in refusals.items()}
        through_gateways = {what: outcome(lambda f=f: f(gateway)) for what, f in refusals.items()}
        assert through_nodes == through_gateways
        assert all(code not in ("OK", "UNAVAILABLE", "INTERNAL") for code, _, _ in through_nodes.values())
        assert [direct.get_account(x).balance for x in (a, b, c)] == [700, 100, 200]  # nothing written
        assert direct.direct.redirected == 0 and direct.direct.direct_calls > answered_by_nodes


def test_hot_accounts_stay_exact_under_2000_concurrent_direct_transfers(bank_cluster: Cluster) -> None:
    """Half the transfers one RPC each, half coalesced per shard; hot accounts on two shards, so
    a quarter or so cross shards. Every acknowledged transfer is booked once, every balance is
    what the acknowledged transfers make it, and replays change nothing."""
    home = bank_cluster.home
    with (
        BankClient.from_home(home, deadline_s=60, route="direct") as single,
        BankClient.from_home(home, deadline_s=60, route="direct", coalesce_transfers=True) as coalescing,
    ):
        hot = [single.open_account(c, "CNY").account_number for c in customers_on(0, "direct-hot0", HOT // 2)]
        hot += [
            single.open_account(c, "CNY").account_number for c in customers_on(2, "direct-hot2", HOT // 2)
        ]
        for account in hot:
            single.deposit(account, OPENING, "CNY")
        rng = random.Random(16)
        plan = [(*rng.sample(hot, 2), rng.randint(1, 200), rid()) for _ in range(TRANSFERS)]
        answers: dict[str, str] = {}
        lock = threading.Lock()

        def send(index: int) -> None:
            source, target, amount, request_id = plan[index]
            client = coalescing if index % 2 else single
            answer = client.transfer(source, target, amount, "CNY", request_id=request_id)
            with lock:
                answers[request_id] = answer.transfer_id

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(send, range(TRANSFERS)))
        assert len(answers) == TRANSFERS and len(set(answers.values())) == TRANSFERS
        expected = Counter({account: OPENING for account in hot})
        for source, target, amount, _ in plan:
            expected[source] -= amount
            expected[target] += amount
        checked = bank_cluster.check(wait_s=30)
        assert checked["reconciled"] and checked["pending_transfers"] == 0, checked
        assert {account: single.get_account(account).balance for account in hot} == dict(expected)
        for source, target, amount, request_id in plan[:100]:  # replays: the first answers, nothing booked
            assert (
                single.transfer(source, target, amount, "CNY", request_id=request_id).transfer_id
                == answers[request_id]
            )
        assert {account: single.get_account(account).balance for account in hot} == dict(expected)
        for client in (single, coalescing):
            assert client.direct is not None and client.direct.direct_calls > 0
        assert single.direct is not None and single.direct.direct_calls > TRANSFERS // 2
