"""Group commit and the batch API (`CreateTransfers`): each transfer keeps its own outcome and
its idempotency; a failing one fails alone; money is conserved on hot accounts; a batch through
a gateway is split by shard and every cross-shard credit lands."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

import grpc
import pytest

from bank.v1 import account_pb2, ledger_pb2
from bankclient import BankClient
from services.cluster.topology import ClusterSpec
from services.common.errors import InsufficientFunds
from services.common.identifiers import (
    make_account_number,
    new_transfer_id,
    slot_of_account,
    slot_of_customer,
)
from services.common.model import PENDING, TRANSFER, Transfer
from services.ledger.booking import book_transfers
from services.storage.group_commit import Unit, run_units
from services.storage.ledger_tx import LedgerTx
from tests.integration.cluster_helpers import Cluster
from tests.integration.conftest import Bank, rid


def transfer(
    source: str, target: str, amount: int, request_id: str | None = None, currency: str = "CNY"
) -> Any:
    return ledger_pb2.TransferRequest(
        request_id=rid() if request_id is None else request_id,
        from_account=source,
        to_account=target,
        amount=amount,
        currency=currency,
    )


def batch(bank: Bank, transfers: list[Any]) -> list[Any]:
    answer = bank.ledger.CreateTransfers(ledger_pb2.CreateTransfersRequest(transfers=transfers), timeout=60)
    return list(answer.results)


def books(bank: Bank, accounts: list[str]) -> dict[str, int]:
    rows = bank.sql(
        "SELECT account_number, balance FROM accounts WHERE account_number = ANY(%s)", (accounts,)
    )
    return {str(a): int(b) for a, b in rows}  # type: ignore[call-overload]


def booked(bank: Bank, request_ids: list[str]) -> Counter[str]:
    rows = bank.sql("SELECT request_id FROM transfers WHERE request_id = ANY(%s)", (request_ids,))
    return Counter(str(r[0]) for r in rows)


def test_mixed_valid_and_invalid_transfers_each_get_their_own_answer(bank: Bank) -> None:
    a, b, c = bank.open("batch-a"), bank.open("batch-b"), bank.open("batch-c")
    usd = bank.open("batch-usd", currency="USD")
    bank.deposit(a, 1_000)
    items = [
        transfer(a, b, 100),
        transfer(a, b, 0),  # no amount
        transfer(a, "0001000000000000", 5),  # not an account number (Luhn)
        transfer(a, b, 10**9),  # more than a holds
        transfer(a, a, 5),  # to itself
        transfer(a, c, 50),
        transfer(a, usd, 5),  # currency mismatch
        transfer(a, b, 25, request_id=""),  # no request id
    ]
    results = batch(bank, items)
    assert [r.index for r in results] == list(range(len(items)))
    assert [r.code for r in results] == [
        "OK", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "INVALID_ARGUMENT", "OK",
        "FAILED_PRECONDITION", "INVALID_ARGUMENT",
    ]  # fmt: skip
    assert results[3].reason == "INSUFFICIENT_FUNDS" and "amount" in results[3].message
    assert results[0].transfer_id and results[0].status == ledger_pb2.TRANSFER_STATUS_COMMITTED
    assert books(bank, [a, b, c]) == {a: 850, b: 100, c: 50}
    # Only the two acknowledged transfers were written, each once; the refused left no trace.
    written = booked(bank, [item.request_id for item in items])
    assert written == Counter({items[0].request_id: 1, items[5].request_id: 1})


def test_duplicates_in_one_batch_and_a_replayed_batch_change_nothing(bank: Bank) -> None:
    a, b = bank.open("dup-a"), bank.open("dup-b")
    bank.deposit(a, 1_000)
    same = rid()
    items = [transfer(a, b, 10, same), transfer(a, b, 10, same), transfer(a, b, 11, same), transfer(a, b, 7)]
    first = batch(bank, items)
    assert [r.code for r in first] == ["OK", "OK", "FAILED_PRECONDITION", "OK"]
    assert first[0].transfer_id == first[1].transfer_id  # the same request answered twice
    assert first[2].reason == "REQUEST_ID_REUSED"
    assert books(bank, [a, b]) == {a: 983, b: 17}
    again = batch(bank, items)  # the whole batch retried under the same ids
    assert [(r.code, r.transfer_id) for r in again] == [(r.code, r.transfer_id) for r in first]
    assert books(bank, [a, b]) == {a: 983, b: 17}


def test_hot_accounts_under_a_batch_and_concurrent_single_transfers(bank: Bank) -> None:
    hot = [bank.open(f"hot-batch-{i}") for i in range(4)]
    for account in hot:
        bank.deposit(account, 5_000)
    rng = random.Random(7)
    pairs = [rng.sample(hot, 2) for _ in range(2_000)]
    items = [transfer(source, target, rng.randint(1, 400)) for source, target in pairs]
    singles: dict[str, str] = {}  # request id -> outcome code
    lock = threading.Lock()

    def single_transfers(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(60):
            source, target = local.sample(hot, 2)
            item = transfer(source, target, local.randint(1, 400))
            try:
                bank.ledger.Transfer(item, timeout=30)
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
            with lock:
                singles[item.request_id] = code

    threads = [threading.Thread(target=single_transfers, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    results = batch(bank, items)
    for thread in threads:
        thread.join(timeout=120)
    codes = Counter(r.code for r in results)
    assert set(codes) <= {"OK", "FAILED_PRECONDITION"} and codes["OK"] > 1_000, codes
    assert set(singles.values()) <= {"OK", "FAILED_PRECONDITION"}, Counter(singles.values())
    balances = books(bank, hot)
    assert sum(balances.values()) == 4 * 5_000 and min(balances.values()) >= 0
    acknowledged = [i.request_id for i, r in zip(items, results, strict=True) if r.code == "OK"]
    acknowledged += [r for r, code in singles.items() if code == "OK"]
    written = booked(bank, [i.request_id for i in items] + list(singles))
    assert written == Counter({r: 1 for r in acknowledged})
    for account in hot:  # each balance is its postings' sum, and its last balance_after
        rows = bank.sql(
            "SELECT sum(amount), (array_agg(balance_after ORDER BY sequence DESC))[1] FROM postings"
            " WHERE account_number = %s",
            (account,),
        )
        assert rows[0] == (balances[account], balances[account])
    ledger = bank.node._ledger  # concurrent single transfers were booked in sets
    assert ledger.single_sets < ledger.singles and ledger.singles >= len(singles), vars(ledger)


def test_a_failing_unit_rolls_back_alone_and_the_others_commit(bank: Bank) -> None:
    store = bank.node.shards.local[0].store
    marker = f"unit-{time.time_ns()}"

    def write(tag: str, fail: bool) -> Any:
        def work(tx: LedgerTx) -> str:
            tx.conn.execute(
                "INSERT INTO requests (request_id, operation, fingerprint, result)"
                " VALUES (%s, 'test', '', '{}')",
                (f"{marker}-{tag}",),
            )
            if fail:
                raise InsufficientFunds(f"amount: unit {tag} refused after writing")
            return tag

        return work

    units = [Unit(write("1", False)), Unit(write("2", True)), Unit(write("3", False))]
    assert run_units(store, units) == []
    assert units[0].future.result() == "1" and units[2].future.result() == "3"
    with pytest.raises(InsufficientFunds):
        units[1].future.result()
    rows = bank.sql("SELECT request_id FROM requests WHERE request_id LIKE %s ORDER BY 1", (f"{marker}-%",))
    assert [r[0] for r in rows] == [f"{marker}-1", f"{marker}-3"]


def test_one_request_id_booked_by_two_transactions_at_once_is_written_once(bank: Bank) -> None:
    """The second transaction cannot see the first one's request until it commits; it then fails
    on the request's key, runs again, and answers the first one's transfer."""
    a, b = bank.open("race-a"), bank.open("race-b")
    bank.deposit(a, 1_000)
    shard = bank.node.shards.local[0]
    request_id = rid()
    second: list[Any] = []
    with shard.store.transaction() as conn:
        unit: Any = shard.ledger.transfer_unit(request_id, a, b, 10, "CNY")
        first = book_transfers(LedgerTx(conn), [unit.set_item])[0]
        assert first is not None and first[0]
        again = shard.ledger.transfer_unit(request_id, a, b, 10, "CNY")
        racer = threading.Thread(target=lambda: second.append(shard.store.run(again)))
        racer.start()
        deadline = time.monotonic() + 10
        while not bank.sql(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ):
            assert time.monotonic() < deadline, "the second transaction never waited for the first"
            time.sleep(0.01)
    racer.join(10)
    assert second and second[0].transfer.transfer_id == first[1].transfer.transfer_id
    assert booked(bank, [request_id]) == Counter({request_id: 1})
    assert books(bank, [a, b]) == {a: 990, b: 10}


def test_credits_delivered_together_are_booked_once_each_and_a_refusal_is_kept(bank: Bank) -> None:
    """The target's half of cross-shard transfers, as a relay delivers them (many at once)."""
    live, frozen = bank.open("credit-live"), bank.open("credit-frozen")
    bank.accounts.FreezeAccount(account_pb2.FreezeAccountRequest(request_id=rid(), account_number=frozen))
    source = make_account_number(1, 424242)  # an account of another shard: only its number travels

    def credit(target: str, amount: int) -> Transfer:
        return Transfer(
            transfer_id=new_transfer_id(1), request_id=rid(), kind=TRANSFER, from_account=source,
            to_account=target, amount=amount, currency="CNY", status=PENDING, reference="",
            failure_reason="", hold_id="", created_at=datetime.min,
        )  # fmt: skip

    first, second, refused = credit(live, 700), credit(live, 50), credit(frozen, 5)
    cross_shard = bank.node.shards.local[0].ledger.cross_shard
    outcomes = cross_shard.apply_credits([first, second, first, refused])
    assert [(o.applied, o.reason) for o in outcomes] == [
        (True, ""), (True, ""), (True, ""), (False, "ACCOUNT_NOT_ACTIVE")
    ]  # fmt: skip
    assert books(bank, [live, frozen]) == {live: 750, frozen: 0}
    ids = [first.transfer_id, second.transfer_id, refused.transfer_id]
    statuses = bank.sql("SELECT transfer_id, status FROM transfers WHERE transfer_id = ANY(%s)", (ids,))
    assert dict(statuses) == {  # type: ignore[arg-type]
        first.transfer_id: "COMMITTED",
        second.transfer_id: "COMMITTED",
        refused.transfer_id: "FAILED",
    }
    postings = bank.sql(
        "SELECT transfer_id, account_number, amount FROM postings WHERE transfer_id = ANY(%s)", (ids,)
    )
    assert sorted(postings) == sorted([  # type: ignore[type-var]
        (first.transfer_id, "SYS:TRANSIT:CNY", -700), (first.transfer_id, live, 700),
        (second.transfer_id, "SYS:TRANSIT:CNY", -50), (second.transfer_id, live, 50),
    ])  # fmt: skip
    # Delivered again (a relay that did not hear the answer): the first outcomes, nothing booked.
    again = cross_shard.apply_credits([refused, second])
    assert [(o.applied, o.reason, o.message) for o in again] == [
        (False, "ACCOUNT_NOT_ACTIVE", "already delivered"), (True, "", "already delivered")
    ]  # fmt: skip
    assert books(bank, [live, frozen]) == {live: 750, frozen: 0}


def test_batch_limits_are_refused_whole(bank: Bank) -> None:
    a, b = bank.open("limit-a"), bank.open("limit-b")
    for transfers, word in (([], "at least one"), ([transfer(a, b, 1)] * 4_097, "at most 4096")):
        with pytest.raises(grpc.RpcError) as refused:
            batch(bank, transfers)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and word in (
            refused.value.details() or ""
        )


@pytest.mark.parametrize("route", ["gateway", "direct"])
def test_a_batch_is_split_by_shard(bank_cluster: Cluster, route: str) -> None:
    """Through a gateway, or by the client itself (direct routing) to each shard's leader."""
    with bank_cluster.client(deadline_s=30, route=route) as client:
        accounts: list[str] = []
        for i in range(200):  # four accounts on every shard
            if len(accounts) == 12:
                break
            customer = f"batch-{route}-{i}"
            shard = ClusterSpec().shard_of_slot(slot_of_customer(customer))
            if sum(1 for a in accounts if bank_cluster_shard(a) == shard) == 4:
                continue
            account = client.open_account(customer, "CNY").account_number
            client.deposit(account, 10_000, "CNY")
            accounts.append(account)
        assert {bank_cluster_shard(a) for a in accounts} == {0, 1, 2}, accounts
        rng = random.Random(3)
        items = [(*rng.sample(accounts, 2), rng.randint(1, 50), "CNY", rid()) for _ in range(600)]
        items.append((accounts[0], "0001000000000000", 5, "CNY", rid()))  # refused at the gateway
        results = client.create_transfers(items)
        assert [r.index for r in results] == list(range(len(items)))
        assert Counter(r.code for r in results) == Counter({"OK": 600, "INVALID_ARGUMENT": 1})
        crossing = [r.transfer_id for (s, t, *_), r in zip(items, results, strict=True) if r.code == "OK"
                    and bank_cluster_shard(s) != bank_cluster_shard(t)]  # fmt: skip
        assert crossing
        deadline = time.monotonic() + 30
        while any(
            client.get_transfer(t).status != ledger_pb2.TRANSFER_STATUS_COMMITTED for t in crossing[:50]
        ):
            assert time.monotonic() < deadline, "cross-shard credits of the batch were not delivered"
            time.sleep(0.2)
        checked = bank_cluster.check(wait_s=30)
        assert checked["reconciled"] and checked["pending_transfers"] == 0, checked
        assert sum(client.get_account(a).balance for a in accounts) == 12 * 10_000  # all credits landed
        if client.direct is not None:  # the parts went to the nodes, not through a gateway
            assert client.direct.direct_calls >= 3 and client.direct.redirected == 0, vars(client.direct)


def bank_cluster_shard(account: str) -> int:
    return ClusterSpec().shard_of_slot(slot_of_account(account))


@pytest.mark.parametrize("route", ["gateway", "direct"])
def test_a_coalescing_client_answers_each_caller_as_its_own_call_would(
    bank_cluster: Cluster, route: str
) -> None:
    """`BankClient(coalesce_transfers=True)`: concurrent `transfer()` calls leave as shared
    batches (to a gateway, or directly routed to the shard's leader), and each caller gets its
    own result, or the very error its own `Transfer` call would have raised (code, message's
    subject, reason), with nothing written for it."""
    home = bank_cluster.home
    with (
        BankClient.from_home(home, deadline_s=30) as plain,
        BankClient.from_home(home, deadline_s=30, coalesce_transfers=True, route=route) as coalescing,
    ):
        a = plain.open_account(f"coalesce-{route}-a", "CNY").account_number
        # b on a's shard: every transfer is booked whole at once, no relay in between
        shard = bank_cluster_shard(a)
        customers = (f"coalesce-{route}-b{i}" for i in range(1000))
        customer = next(c for c in customers if ClusterSpec().shard_of_slot(slot_of_customer(c)) == shard)
        b = plain.open_account(customer, "CNY").account_number
        plain.deposit(a, 1_000, "CNY")
        replayed = rid()
        first = plain.transfer(a, b, 10, "CNY", request_id=replayed)
        assert coalescing._coalescer is not None
        sizes: list[int] = []
        send = coalescing._coalescer._send

        def counted(key: Any, items: list[Any], latest: float) -> list[Any]:
            sizes.append(len(items))
            return send(key, items, latest)

        coalescing._coalescer._send = counted
        calls = [(a, b, 5, rid()) for _ in range(30)]  # 150 of a's 990
        calls += [
            (a, b, 10, replayed),  # a replay: the first transfer's answer
            (a, b, 11, replayed),  # the same request id for another transfer
            (a, b, 10**6, rid()),  # more than a holds
            (a, "0001000000000000", 5, rid()),  # not an account number
            (a, a, 5, rid()),  # to itself
        ]
        out: dict[int, Any] = {}
        start = threading.Barrier(len(calls))

        def call(index: int) -> None:
            source, target, amount, request_id = calls[index]
            start.wait(10)
            try:
                out[index] = coalescing.transfer(source, target, amount, "CNY", request_id=request_id)
            except grpc.RpcError as err:  # its metadata read as grpc's own: m.key, m.value
                metadata = err.trailing_metadata() or ()
                reason = next((m.value for m in metadata if m.key == "bank-error-reason"), "")
                out[index] = (err.code(), reason)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(sizes) == len(calls) and len(sizes) < len(calls), sizes  # they did travel together
        oks = [out[i] for i in range(30)]
        assert all(r.status == ledger_pb2.TRANSFER_STATUS_COMMITTED and r.transfer_id for r in oks), oks
        assert len({r.transfer_id for r in oks}) == 30
        assert out[30].transfer_id == first.transfer_id
        assert out[31] == (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_ID_REUSED")
        assert out[32] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
        # What the same refused requests get as calls of their own: the same code and reason.
        for index in (31, 32, 33, 34):
            source, target, amount, request_id = calls[index]
            with pytest.raises(grpc.RpcError) as own:
                plain.transfer(source, target, amount, "CNY", request_id=request_id)
            reason = dict(own.value.trailing_metadata() or ()).get("bank-error-reason", "")
            assert out[index] == (own.value.code(), reason), index
        assert out[33][0] == out[34][0] == grpc.StatusCode.INVALID_ARGUMENT
        assert plain.get_account(a).balance == 1_000 - 10 - 150
        assert plain.get_account(b).balance == 10 + 150
        if coalescing.direct is not None:  # the batches went to the shard's leader itself
            assert coalescing.direct.direct_calls >= len(sizes) - 1, vars(coalescing.direct)
