"""Concurrent transfers on a few hot accounts serialize correctly: no lost update, no overdraft,
every acknowledged transfer booked exactly once, and replays change nothing."""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from bank.v1 import ledger_pb2
from tests.integration.conftest import Bank

ACCOUNTS = 10
TRANSFERS = 2_000
CONCURRENCY = 32
OPENING_BALANCE = 100_000  # 1,000.00 CNY each
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
MAX_TRIES = 20


@dataclass
class Outcome:
    request: ledger_pb2.TransferRequest
    transfer_id: str | None  # set when acknowledged
    code: grpc.StatusCode | None  # set when refused for good
    retries: int


def send(bank: Bank, request: ledger_pb2.TransferRequest) -> Outcome:
    """Sends a transfer, retrying retry-able codes with the same request id (bounded)."""
    for attempt in range(MAX_TRIES):
        try:
            answer = bank.ledger.Transfer(request, timeout=30)
            return Outcome(request, answer.transfer_id, None, attempt)
        except grpc.RpcError as err:
            if err.code() not in RETRYABLE:
                return Outcome(request, None, err.code(), attempt)
    raise AssertionError(f"transfer {request.request_id} still retry-able after {MAX_TRIES} tries")


def ledger_snapshot(bank: Bank) -> list[tuple[object, ...]]:
    return bank.sql(
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM postings),"
        " (SELECT count(*) FROM requests),"
        " (SELECT md5(string_agg(a::text, ',' ORDER BY account_number)) FROM accounts a)"
    )


def test_hot_accounts_under_concurrent_transfers(bank: Bank) -> None:
    accounts = [bank.open(f"hot-{i}") for i in range(ACCOUNTS)]
    for account in accounts:
        bank.deposit(account, OPENING_BALANCE)
    rng = random.Random(20261129)
    requests = []
    for i in range(TRANSFERS):
        source, target = rng.sample(accounts, 2)
        requests.append(
            ledger_pb2.TransferRequest(
                request_id=f"hot-{i}-{rng.getrandbits(64):016x}", from_account=source, to_account=target,
                amount=rng.randint(1, 25_000), currency="CNY",
            )
        )  # fmt: skip

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(lambda r: send(bank, r), requests))
    elapsed = time.monotonic() - started
    acked = {o.request.request_id: o.transfer_id for o in outcomes if o.transfer_id}
    refused = Counter(o.code for o in outcomes if o.code is not None)
    print(
        f"\n[concurrency] {TRANSFERS} transfers, {CONCURRENCY} at a time, in {elapsed:.1f} s "
        f"({TRANSFERS / elapsed:.0f}/s): {len(acked)} acknowledged, refused {dict(refused)}, "
        f"retries {sum(o.retries for o in outcomes)}"
    )
    # Only insufficient funds may refuse a transfer here; most must go through.
    assert set(refused) <= {grpc.StatusCode.FAILED_PRECONDITION}
    assert len(acked) > TRANSFERS // 2

    balances = dict(bank.sql("SELECT account_number, balance FROM accounts WHERE customer_id LIKE 'hot-%'"))
    assert sum(balances.values()) == ACCOUNTS * OPENING_BALANCE  # type: ignore[arg-type]
    assert min(balances.values()) >= 0  # type: ignore[type-var]
    assert bank.sql("SELECT sum(held) FROM accounts WHERE customer_id LIKE 'hot-%'") == [(0,)]

    # Every acknowledged transfer is booked exactly once, as two lines that sum to zero, and
    # nothing was booked that was not acknowledged.
    booked = dict(
        bank.sql(
            "SELECT t.request_id, t.transfer_id FROM transfers t WHERE t.kind = 'TRANSFER'"
            " AND t.request_id LIKE 'hot-%'"
        )
    )
    assert booked == acked
    lines = bank.sql(
        "SELECT p.transfer_id, count(*), sum(p.amount) FROM postings p JOIN transfers t USING (transfer_id)"
        " WHERE t.request_id LIKE 'hot-%' GROUP BY p.transfer_id"
    )
    assert len(lines) == len(acked)
    assert all(count == 2 and total == 0 for _, count, total in lines)

    # Each balance is the sum of its postings, and the last posting's running balance.
    for account, balance in balances.items():
        total, last = bank.sql(
            "SELECT sum(amount), (array_agg(balance_after ORDER BY sequence DESC))[1]"
            " FROM postings WHERE account_number = %s",
            (account,),
        )[0]
        assert total == balance and last == balance, account

    # Replaying every acknowledged transfer returns the first result and changes nothing.
    before = ledger_snapshot(bank)
    replayed = [o for o in outcomes if o.transfer_id]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        again = list(pool.map(lambda o: send(bank, o.request), replayed))
    assert [a.transfer_id for a in again] == [o.transfer_id for o in replayed]
    assert ledger_snapshot(bank) == before
