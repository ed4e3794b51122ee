"""Every kind of bad input gets its precise status, a message naming the field, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from bank.v1 import account_pb2, ledger_pb2
from services.common.identifiers import make_account_number
from tests.integration.conftest import Bank, rid

CNY = "CNY"
L = ledger_pb2
A = account_pb2


@dataclass
class World:
    """Accounts in every state a bad request may meet."""

    rich: str  # CNY, 1,000.00
    poor: str  # CNY, 0
    usd: str  # USD, 10.00
    frozen: str  # CNY, 5.00, frozen
    closed: str  # CNY, closed
    missing: str  # well formed, never opened
    hold_id: str  # an active hold on `rich` of 1.00
    voided_hold_id: str
    used_request_id: str  # a deposit of 1.00 to `rich`


@pytest.fixture(scope="module")
def world(bank: Bank) -> World:
    rich, poor, usd = bank.open("bad-rich"), bank.open("bad-poor"), bank.open("bad-usd", "USD")
    frozen, closed = bank.open("bad-frozen"), bank.open("bad-closed")
    bank.deposit(rich, 100_000)
    bank.deposit(usd, 1_000, "USD")
    bank.deposit(frozen, 500)
    bank.accounts.FreezeAccount(A.FreezeAccountRequest(request_id=rid(), account_number=frozen))
    bank.accounts.CloseAccount(A.CloseAccountRequest(request_id=rid(), account_number=closed))
    hold = bank.ledger.CreateHold(
        L.CreateHoldRequest(request_id=rid(), account_number=rich, to_account=poor, amount=100, currency=CNY)
    ).hold
    voided = bank.ledger.CreateHold(
        L.CreateHoldRequest(request_id=rid(), account_number=rich, to_account=poor, amount=100, currency=CNY)
    ).hold
    bank.ledger.VoidHold(L.VoidHoldRequest(request_id=rid(), hold_id=voided.hold_id))
    used = rid()
    bank.ledger.Deposit(L.DepositRequest(request_id=used, account_number=rich, amount=100, currency=CNY))
    return World(
        rich,
        poor,
        usd,
        frozen,
        closed,
        make_account_number(7, 99_999_999_999),
        hold.hold_id,
        voided.hold_id,
        used,
    )


def bad_check_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def deposit(w: World, **fields: Any) -> Callable[[Bank], Any]:
    values = {"request_id": rid(), "account_number": w.rich, "amount": 100, "currency": CNY, **fields}
    if "amount_decimal" in fields:
        values.pop("amount")
    return lambda bank: bank.ledger.Deposit(L.DepositRequest(**values))


def transfer(w: World, **fields: Any) -> Callable[[Bank], Any]:
    values = {
        "request_id": rid(), "from_account": w.rich, "to_account": w.poor, "amount": 100, "currency": CNY,
        **fields,
    }  # fmt: skip
    if "amount_decimal" in fields:
        values.pop("amount")
    return lambda bank: bank.ledger.Transfer(L.TransferRequest(**values))


def withdraw(w: World, **fields: Any) -> Callable[[Bank], Any]:
    values = {"request_id": rid(), "account_number": w.rich, "amount": 100, "currency": CNY, **fields}
    return lambda bank: bank.ledger.Withdraw(L.WithdrawRequest(**values))


def open_account(**fields: Any) -> Callable[[Bank], Any]:
    values = {"request_id": rid(), "customer_id": "bad-new", "currency": CNY, **fields}
    return lambda bank: bank.accounts.OpenAccount(A.OpenAccountRequest(**values))


INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
MAX_INT64 = 2**63 - 1

# name -> (request built from the world, expected status, a word the message must hold)
CASES: dict[str, tuple[Callable[[World], Callable[[Bank], Any]], grpc.StatusCode, str]] = {
    "zero amount": (lambda w: deposit(w, amount=0), INVALID, "amount"),
    "negative amount": (lambda w: deposit(w, amount=-500), INVALID, "amount"),
    "negative transfer": (lambda w: transfer(w, amount=-1), INVALID, "amount"),
    "no amount at all": (lambda w: lambda bank: bank.ledger.Deposit(
        L.DepositRequest(request_id=rid(), account_number=w.rich, currency=CNY)), INVALID, "amount"),
    "decimal finer than the currency": (lambda w: deposit(w, amount_decimal="10.005"), INVALID, "amount_decimal"),
    "decimal cents on yen": (lambda w: deposit(w, amount_decimal="1.5", currency="JPY"), INVALID, "amount_decimal"),
    "decimal not a number": (lambda w: deposit(w, amount_decimal="12,50"), INVALID, "amount_decimal"),
    "decimal in exponent form": (lambda w: deposit(w, amount_decimal="1e3"), INVALID, "amount_decimal"),
    "decimal NaN": (lambda w: deposit(w, amount_decimal="NaN"), INVALID, "amount_decimal"),
    "decimal negative": (lambda w: deposit(w, amount_decimal="-1.00"), INVALID, "amount_decimal"),
    "decimal zero": (lambda w: deposit(w, amount_decimal="0.00"), INVALID, "amount_decimal"),
    "amount beyond a single movement": (lambda w: deposit(w, amount=10**15 + 1), INVALID, "amount"),
    "amount at int64 max": (lambda w: transfer(w, amount=MAX_INT64), INVALID, "amount"),
    "decimal overflowing int64": (lambda w: deposit(w, amount_decimal="99999999999999999999.99"), INVALID,
                                  "amount_decimal"),
    "malformed account number": (lambda w: deposit(w, account_number="12345"), INVALID, "account_number"),
    "letters in account number": (lambda w: deposit(w, account_number="00AB000000000012"), INVALID,
                                  "account_number"),
    "bad check digit": (lambda w: deposit(w, account_number=bad_check_digit(w.rich)), INVALID, "check digit"),
    "bad check digit on target": (lambda w: transfer(w, to_account=bad_check_digit(w.poor)), INVALID,
                                  "to_account"),
    "slot beyond the bank": (lambda w: deposit(w, account_number=make_luhn("9999" + "0" * 10 + "1")), INVALID,
                             "slot"),
    "unknown account": (lambda w: deposit(w, account_number=w.missing), NOT_FOUND, "account_number"),
    "unknown target account": (lambda w: transfer(w, to_account=w.missing), NOT_FOUND, "to_account"),
    "unknown currency": (lambda w: deposit(w, currency="XYZ"), INVALID, "currency"),
    "lower-case currency": (lambda w: deposit(w, currency="cny"), INVALID, "currency"),
    "missing currency": (lambda w: deposit(w, currency=""), INVALID, "currency"),
    "currency mismatch on deposit": (lambda w: deposit(w, currency="USD"), PRECONDITION, "USD"),
    "currency mismatch between accounts": (lambda w: transfer(w, to_account=w.usd), PRECONDITION, "to_account"),
    "transfer to the same account": (lambda w: transfer(w, to_account=w.rich), INVALID, "to_account"),
    "deposit to frozen account": (lambda w: deposit(w, account_number=w.frozen), PRECONDITION, "frozen"),
    "transfer from frozen account": (lambda w: transfer(w, from_account=w.frozen), PRECONDITION, "frozen"),
    "transfer to frozen account": (lambda w: transfer(w, to_account=w.frozen), PRECONDITION, "frozen"),
    "deposit to closed account": (lambda w: deposit(w, account_number=w.closed), PRECONDITION, "closed"),
    "transfer to closed account": (lambda w: transfer(w, to_account=w.closed), PRECONDITION, "closed"),
    "insufficient funds": (lambda w: transfer(w, from_account=w.poor, to_account=w.rich), PRECONDITION, "available"),
    "withdraw more than available": (lambda w: withdraw(w, amount=100_001), PRECONDITION, "available"),
    "missing request id": (lambda w: deposit(w, request_id=""), INVALID, "request_id"),
    "request id far too long": (lambda w: deposit(w, request_id="r" * 10_000), INVALID, "request_id"),
    "request id with spaces": (lambda w: deposit(w, request_id="a b"), INVALID, "request_id"),
    "request id reused with another payload": (lambda w: deposit(w, request_id=w.used_request_id, amount=101),
                                               PRECONDITION, "request_id"),
    "reference far too long": (lambda w: transfer(w, reference="x" * 5_000), INVALID, "reference"),
    "customer id far too long": (lambda w: open_account(customer_id="c" * 1_000), INVALID, "customer_id"),
    "customer id missing": (lambda w: open_account(customer_id=""), INVALID, "customer_id"),
    "open with unknown currency": (lambda w: open_account(currency="ABC"), INVALID, "currency"),
    "open with negative overdraft": (lambda w: open_account(overdraft_limit=-1), INVALID, "overdraft_limit"),
    "page size negative": (lambda w: lambda bank: bank.ledger.ListPostings(
        L.ListPostingsRequest(account_number=w.rich, page_size=-1)), INVALID, "page_size"),
    "page size too large": (lambda w: lambda bank: bank.ledger.ListPostings(
        L.ListPostingsRequest(account_number=w.rich, page_size=1001)), INVALID, "page_size"),
    "page token forged": (lambda w: lambda bank: bank.ledger.ListPostings(
        L.ListPostingsRequest(account_number=w.rich, page_token="not-a-token")), INVALID, "page_token"),
    "statement of unknown account": (lambda w: lambda bank: bank.ledger.ListPostings(
        L.ListPostingsRequest(account_number=w.missing)), NOT_FOUND, "account_number"),
    "close account with a balance": (lambda w: lambda bank: bank.accounts.CloseAccount(
        A.CloseAccountRequest(request_id=rid(), account_number=w.usd)), PRECONDITION, "balance"),
    "close account with an active hold": (lambda w: lambda bank: bank.accounts.CloseAccount(
        A.CloseAccountRequest(request_id=rid(), account_number=w.rich)), PRECONDITION, "holds"),
    "unfreeze a closed account": (lambda w: lambda bank: bank.accounts.UnfreezeAccount(
        A.UnfreezeAccountRequest(request_id=rid(), account_number=w.closed)), PRECONDITION, "closed"),
    "freeze reason far too long": (lambda w: lambda bank: bank.accounts.FreezeAccount(
        A.FreezeAccountRequest(request_id=rid(), account_number=w.rich, reason="r" * 1_000)), INVALID, "reason"),
    "get unknown account": (lambda w: lambda bank: bank.accounts.GetAccount(
        A.GetAccountRequest(account_number=w.missing)), NOT_FOUND, "account_number"),
    "malformed transfer id": (lambda w: lambda bank: bank.ledger.GetTransfer(
        L.GetTransferRequest(transfer_id="42")), INVALID, "transfer_id"),
    "unknown transfer id": (lambda w: lambda bank: bank.ledger.GetTransfer(
        L.GetTransferRequest(transfer_id="T0001-" + "0" * 32)), NOT_FOUND, "transfer_id"),
    "hold beyond available": (lambda w: lambda bank: bank.ledger.CreateHold(L.CreateHoldRequest(
        request_id=rid(), account_number=w.poor, to_account=w.rich, amount=1, currency=CNY)), PRECONDITION,
        "available"),
    "hold timeout too long": (lambda w: lambda bank: bank.ledger.CreateHold(L.CreateHoldRequest(
        request_id=rid(), account_number=w.rich, to_account=w.poor, amount=1, currency=CNY,
        timeout_seconds=10**7)), INVALID, "timeout_seconds"),
    "capture more than held": (lambda w: lambda bank: bank.ledger.CaptureHold(
        L.CaptureHoldRequest(request_id=rid(), hold_id=w.hold_id, amount=101)), INVALID, "amount"),
    "capture negative": (lambda w: lambda bank: bank.ledger.CaptureHold(
        L.CaptureHoldRequest(request_id=rid(), hold_id=w.hold_id, amount=-1)), INVALID, "amount"),
    "capture a voided hold": (lambda w: lambda bank: bank.ledger.CaptureHold(
        L.CaptureHoldRequest(request_id=rid(), hold_id=w.voided_hold_id)), PRECONDITION, "voided"),
    "malformed hold id": (lambda w: lambda bank: bank.ledger.VoidHold(
        L.VoidHoldRequest(request_id=rid(), hold_id="H1")), INVALID, "hold_id"),
    "unknown hold id": (lambda w: lambda bank: bank.ledger.VoidHold(
        L.VoidHoldRequest(request_id=rid(), hold_id="H0001-" + "f" * 32)), NOT_FOUND, "hold_id"),
}  # fmt: skip


def make_luhn(body15: str) -> str:
    from services.common.identifiers import luhn_check_digit

    return body15 + str(luhn_check_digit(body15))


SNAPSHOT = """
SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transfers), (SELECT count(*) FROM postings),
       (SELECT count(*) FROM holds), (SELECT count(*) FROM requests),
       (SELECT md5(string_agg(a::text, ',' ORDER BY account_number)) FROM accounts a),
       (SELECT md5(string_agg(h::text, ',' ORDER BY hold_id)) FROM holds h)
"""


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_precisely_and_writes_nothing(bank: Bank, world: World, case: str) -> None:
    build, expected, word = CASES[case]
    call = build(world)
    before = bank.sql(SNAPSHOT)
    with pytest.raises(grpc.RpcError) as refused:
        call(bank)
    assert refused.value.code() == expected, refused.value.details()
    assert word in (refused.value.details() or ""), refused.value.details()
    assert bank.sql(SNAPSHOT) == before


def test_credit_that_would_overflow_the_balance_is_refused(bank: Bank, world: World) -> None:
    target = bank.open("bad-overflow")
    # Only a direct write can bring a balance this close to the int64 limit.
    bank.sql("UPDATE accounts SET balance = %s WHERE account_number = %s", (MAX_INT64 - 10, target))
    before = bank.sql(SNAPSHOT)
    with pytest.raises(grpc.RpcError) as refused:
        deposit(world, account_number=target, amount=11)(bank)
    assert refused.value.code() == INVALID
    assert "overflow" in (refused.value.details() or "")
    assert bank.sql(SNAPSHOT) == before
    bank.sql("UPDATE accounts SET balance = 0 WHERE account_number = %s", (target,))


def test_oversized_message_is_refused_by_grpc(bank: Bank, world: World) -> None:
    before = bank.sql(SNAPSHOT)
    with pytest.raises(grpc.RpcError) as refused:
        deposit(world, reference="x" * (2 << 20))(bank)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert bank.sql(SNAPSHOT) == before


def test_every_case_is_a_distinct_request() -> None:
    assert len(CASES) >= 50
