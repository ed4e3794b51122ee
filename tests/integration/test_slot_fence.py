"""Every write checks, in its own transaction, that its shard may write its slots: a frozen
slot's writes are refused to be retried, a moved slot's name the new shard, and a batch or a
delivery of credits refuses only the transfers of such slots."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import psycopg
import pytest

from bank.v1 import account_pb2, ledger_pb2
from services.common.identifiers import slot_of_account, slot_of_customer
from services.storage import slots
from tests.integration.conftest import Bank, rid

REASON_KEY = "bank-error-reason"


def set_state(bank: Bank, slot: int, state: str, moved_to: int | None = None) -> None:
    with psycopg.connect(bank.conninfo) as conn, conn.transaction():
        slots.set_states(conn, [slot], state, 2, moved_to)


def reason(err: grpc.RpcError) -> str:
    return str(dict(err.trailing_metadata() or ()).get(REASON_KEY, ""))  # type: ignore[arg-type]


@pytest.fixture
def pair(bank: Bank) -> Iterator[tuple[str, str]]:
    """Two funded accounts in different slots; every slot writable again afterwards."""
    source, target = bank.open("fence-source"), bank.open("fence-target-2")
    assert source[:4] != target[:4]
    bank.deposit(source, 10_000)
    yield source, target
    for account in (source, target):
        set_state(bank, slot_of_account(account), slots.OWNED)


def test_a_shard_records_the_slots_it_owns_when_it_first_serves(bank: Bank) -> None:
    with psycopg.connect(bank.conninfo) as conn:
        owned = {s for s, (state, _, _) in slots.states(conn).items() if state == slots.OWNED}
    assert len(owned) == 1024  # the lone node's map gives its shard every slot


@pytest.mark.parametrize(
    ("state", "code", "word"),
    [(slots.FROZEN, "SLOT_MOVING", "moving"), (slots.INCOMING, "SLOT_MOVING", "moving"),
     (slots.GONE, "SLOT_MOVED", "shard 7")],
)  # fmt: skip
def test_a_write_to_a_slot_not_owned_is_refused_retryably_and_writes_nothing(
    bank: Bank, pair: tuple[str, str], state: str, code: str, word: str
) -> None:
    source, target = pair
    set_state(bank, slot_of_account(source), state, moved_to=7 if state == slots.GONE else None)
    before = bank.sql("SELECT count(*), sum(balance) FROM accounts")
    for call in (
        lambda: bank.deposit(source, 100),
        lambda: bank.ledger.Transfer(ledger_pb2.TransferRequest(
            request_id=rid(), from_account=target, to_account=source, amount=1, currency="CNY")),
        lambda: bank.ledger.Withdraw(ledger_pb2.WithdrawRequest(
            request_id=rid(), account_number=source, amount=1, currency="CNY")),
        lambda: bank.accounts.FreezeAccount(account_pb2.FreezeAccountRequest(
            request_id=rid(), account_number=source)),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert reason(refused.value) == code and word in (refused.value.details() or "")
    assert bank.sql("SELECT count(*), sum(balance) FROM accounts") == before
    set_state(bank, slot_of_account(source), slots.OWNED)
    assert bank.deposit(source, 100) == 10_100


def test_opening_an_account_in_a_frozen_slot_is_refused(bank: Bank) -> None:
    slot = slot_of_customer("fence-newcomer")
    set_state(bank, slot, slots.FROZEN)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            bank.open("fence-newcomer")
        assert reason(refused.value) == "SLOT_MOVING" and "customer" in (refused.value.details() or "")
    finally:
        set_state(bank, slot, slots.OWNED)
    assert bank.open("fence-newcomer")[:4] == f"{slot:04d}"


def test_a_batch_refuses_only_the_transfers_of_a_frozen_slot(bank: Bank, pair: tuple[str, str]) -> None:
    source, target = pair
    other = bank.open("fence-other-3")
    assert other[:4] not in (source[:4], target[:4])
    set_state(bank, slot_of_account(target), slots.FROZEN)
    transfers = [
        ledger_pb2.TransferRequest(
            request_id=rid(), from_account=source, to_account=target, amount=5, currency="CNY"
        ),
        ledger_pb2.TransferRequest(
            request_id=rid(), from_account=source, to_account=other, amount=7, currency="CNY"
        ),
    ]
    results = bank.ledger.CreateTransfers(ledger_pb2.CreateTransfersRequest(transfers=transfers)).results
    assert [r.code for r in results] == ["UNAVAILABLE", "OK"]
    assert results[0].reason == "SLOT_MOVING"
    assert bank.balance(other) == 7 and bank.balance(target) == 0 and bank.balance(source) == 10_000 - 7
