"""A set of transfers booked by the database (book_transfer_set, functions/book_transfer_set.sql):
in order, each transfer seeing the balances the earlier ones left; each refusal worded as a single call's; an
expired hold's funds released before the rules read them; the rows written as before."""

from __future__ import annotations

from typing import Any

import grpc

from bank.v1 import account_pb2, ledger_pb2
from bankclient.direct import REASON_KEY
from services.common.identifiers import make_account_number, slot_of_account
from services.common.money import format_minor
from tests.integration.conftest import Bank, rid


def transfer(source: str, target: str, amount: int) -> Any:
    return ledger_pb2.TransferRequest(
        request_id=rid(), from_account=source, to_account=target, amount=amount, currency="CNY"
    )


def single_refusal(bank: Bank, item: Any) -> tuple[str, str]:
    """The reason and message one Transfer call gets for the same transfer under a new id."""
    try:
        bank.ledger.Transfer(transfer(item.from_account, item.to_account, item.amount))
    except grpc.RpcError as refused:
        reason = dict(refused.trailing_metadata() or ()).get(REASON_KEY, "")
        return str(reason), refused.details() or ""
    raise AssertionError(f"a single transfer of {item.amount} was booked")


def test_a_set_sees_its_earlier_transfers_and_words_refusals_as_a_single_call(bank: Bank) -> None:
    a, b, frozen = bank.open("set-a"), bank.open("set-b"), bank.open("set-frozen")
    usd = bank.open("set-usd", currency="USD")
    missing = make_account_number(slot_of_account(a), 99_999_999_999)
    bank.deposit(a, 100)
    bank.accounts.FreezeAccount(account_pb2.FreezeAccountRequest(request_id=rid(), account_number=frozen))
    items = [
        transfer(a, b, 60),  # a 40, b 60
        transfer(a, b, 60),  # 40 available: refused
        transfer(b, a, 30),  # b 30, a 70
        transfer(a, b, 60),  # a 10, b 90: booked thanks to the one before
        transfer(a, frozen, 1),
        transfer(a, usd, 1),
        transfer(a, missing, 1),
        transfer(frozen, a, 1),
        transfer(a, b, 11),  # 10 available: refused
    ]
    answer = bank.ledger.CreateTransfers(ledger_pb2.CreateTransfersRequest(transfers=items), timeout=60)
    results = list(answer.results)
    assert [(r.code, r.reason) for r in results] == [
        ("OK", ""), ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS"), ("OK", ""), ("OK", ""),
        ("FAILED_PRECONDITION", "ACCOUNT_NOT_ACTIVE"), ("FAILED_PRECONDITION", "CURRENCY_MISMATCH"),
        ("NOT_FOUND", "NOT_FOUND"), ("FAILED_PRECONDITION", "ACCOUNT_NOT_ACTIVE"),
        ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS"),
    ]  # fmt: skip
    assert results[1].message == (
        f"amount: account {a} has {format_minor(40, 'CNY')} available, {format_minor(60, 'CNY')} requested"
    )
    for index in (4, 5, 6, 7, 8):  # the state is the one they saw: the same words as one call's
        assert (results[index].reason, results[index].message) == single_refusal(bank, items[index])
    assert {n: bank.balance(n) for n in (a, b)} == {a: 10, b: 90}
    rows = bank.sql(
        "SELECT t.status, count(p.*), sum(p.amount), max(q.operation) FROM transfers t"
        " JOIN postings p USING (transfer_id) JOIN requests q USING (request_id)"
        " WHERE t.request_id = ANY(%s) GROUP BY t.transfer_id, t.status",
        ([item.request_id for item in items],),
    )
    assert sorted(rows) == [("COMMITTED", 2, 0, "Transfer")] * 3  # type: ignore[operator]
    versions = bank.sql("SELECT version FROM accounts WHERE account_number = %s", (b,))
    assert versions == [(4,)]  # opened at 1, then three transfers


def test_an_expired_hold_is_released_before_the_rules_read_the_account(bank: Bank) -> None:
    a, b = bank.open("set-hold-a"), bank.open("set-hold-b")
    bank.deposit(a, 500)
    bank.ledger.CreateHold(
        ledger_pb2.CreateHoldRequest(
            request_id=rid(), account_number=a, to_account=b, amount=500, currency="CNY", timeout_seconds=3600
        )
    )
    refused = bank.ledger.CreateTransfers(
        ledger_pb2.CreateTransfersRequest(transfers=[transfer(a, b, 200)]), timeout=60
    ).results[0]
    assert refused.reason == "INSUFFICIENT_FUNDS"
    bank.sql("UPDATE holds SET expires_at = now() - interval '1 second' WHERE account_number = %s", (a,))
    booked = bank.ledger.Transfer(transfer(a, b, 200), timeout=60)  # a set of one
    assert booked.status == ledger_pb2.TRANSFER_STATUS_COMMITTED
    assert bank.sql("SELECT status FROM holds WHERE account_number = %s", (a,)) == [("EXPIRED",)]
    assert bank.sql("SELECT balance, held FROM accounts WHERE account_number = %s", (a,)) == [(300, 0)]


def test_a_retry_gets_its_first_answer_whole_from_the_short_request_row(bank: Bank) -> None:
    """A transfer's request row keeps its id, first status and balance (migration 0010); a retry
    is answered the transfer as first answered, whole, though its row has moved on since (as a
    cross-shard transfer's does once its credit is delivered or refused)."""
    a, b = bank.open("short-a"), bank.open("short-b")
    bank.deposit(a, 100)
    single, batched = transfer(a, b, 25), transfer(a, b, 30)
    first = bank.ledger.Transfer(single)
    batch = ledger_pb2.CreateTransfersRequest(transfers=[batched], full_transfers=True)
    first_batch = bank.ledger.CreateTransfers(batch).results[0]
    rows = bank.sql(
        "SELECT result, octet_length(result::text) FROM requests WHERE request_id = ANY(%s) ORDER BY 2",
        ([single.request_id, batched.request_id],),
    )
    for result, size in rows:
        assert isinstance(result, dict) and result["type"] == "TransferAnswer", result
        assert int(str(size)) < 160  # the whole answer took about 450 bytes
        assert result["transfer"]["status"] == "COMMITTED" and result["balance_after"] in (75, 45)
    ids = [first.transfer_id, first_batch.transfer_id]
    bank.sql(
        "UPDATE transfers SET status = 'FAILED', failure_reason = 'later' WHERE transfer_id = ANY(%s)", (ids,)
    )
    again, again_batch = bank.ledger.Transfer(single), bank.ledger.CreateTransfers(batch).results[0]
    assert again == first and again.transfer.status == ledger_pb2.TRANSFER_STATUS_COMMITTED
    assert again_batch == first_batch and again_batch.transfer.failure_reason == ""
    assert first_batch.transfer.created_at == again_batch.transfer.created_at
    assert bank.balance(a) == 45  # each booked once
