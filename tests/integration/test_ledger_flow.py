"""The ledger's rules through the gRPC contract, against a real PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bank.v1 import account_pb2, ledger_pb2
from services.common.identifiers import slot_of_account, slot_of_customer
from tests.eventually import eventually
from tests.integration.conftest import Bank, rid

CNY = "CNY"


def test_deposit_transfer_withdraw_are_double_entry(bank: Bank) -> None:
    alice, bob = bank.open("flow-alice"), bank.open("flow-bob")
    assert bank.deposit(alice, 100_000) == 100_000
    moved = bank.ledger.Transfer(
        ledger_pb2.TransferRequest(
            request_id=rid(), from_account=alice, to_account=bob, amount_decimal="123.45", currency=CNY
        )
    )
    assert moved.status == ledger_pb2.TRANSFER_STATUS_COMMITTED
    assert moved.transfer.amount == 12_345
    out = bank.ledger.Withdraw(
        ledger_pb2.WithdrawRequest(request_id=rid(), account_number=bob, amount=2_345, currency=CNY)
    )
    assert out.balance_after == 10_000
    assert (bank.balance(alice), bank.balance(bob)) == (87_655, 10_000)

    # Every transfer's postings sum to zero; the cash account mirrors the money that came in.
    unbalanced = bank.sql("SELECT transfer_id FROM postings GROUP BY transfer_id HAVING sum(amount) <> 0")
    assert unbalanced == []
    cash = bank.sql("SELECT sum(amount) FROM postings WHERE account_number = 'SYS:CASH:CNY'")[0][0]
    customers = bank.sql("SELECT sum(balance) FROM accounts")[0][0]
    assert cash is not None and customers is not None and int(cash) + int(customers) == 0


def test_same_request_id_returns_first_result_and_other_payload_is_refused(bank: Bank) -> None:
    alice, bob = bank.open("idem-alice"), bank.open("idem-bob")
    bank.deposit(alice, 50_000)
    request = ledger_pb2.TransferRequest(
        request_id=rid(), from_account=alice, to_account=bob, amount=1_000, currency=CNY
    )
    first = bank.ledger.Transfer(request)
    again = bank.ledger.Transfer(request)
    assert again.transfer_id == first.transfer_id
    assert again.transfer == first.transfer
    assert bank.balance(alice) == 49_000  # applied once

    # The same amount written as a decimal is the same request.
    same = ledger_pb2.TransferRequest(
        request_id=request.request_id,
        from_account=alice,
        to_account=bob,
        amount_decimal="10.00",
        currency=CNY,
    )
    assert bank.ledger.Transfer(same).transfer_id == first.transfer_id

    other = ledger_pb2.TransferRequest(
        request_id=request.request_id, from_account=alice, to_account=bob, amount=2_000, currency=CNY
    )
    with pytest.raises(grpc.RpcError) as refused:
        bank.ledger.Transfer(other)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "request_id" in (refused.value.details() or "")
    assert dict(refused.value.trailing_metadata() or ())["bank-error-reason"] == "REQUEST_ID_REUSED"
    assert bank.balance(alice) == 49_000


def test_open_account_is_idempotent_and_numbers_carry_slot(bank: Bank) -> None:
    request = account_pb2.OpenAccountRequest(request_id=rid(), customer_id="idem-carol", currency="EUR")
    first = bank.accounts.OpenAccount(request).account
    again = bank.accounts.OpenAccount(request).account
    assert first.account_number == again.account_number
    assert first.account_number.startswith(f"{first.slot:04d}")
    assert bank.sql("SELECT count(*) FROM accounts WHERE customer_id = 'idem-carol'") == [(1,)]


def test_statement_pages_through_postings_in_order(bank: Bank) -> None:
    alice, bob = bank.open("page-alice"), bank.open("page-bob")
    bank.deposit(alice, 1_000_000)
    for amount in range(1, 26):
        bank.ledger.Transfer(
            ledger_pb2.TransferRequest(
                request_id=rid(), from_account=alice, to_account=bob, amount=amount, currency=CNY
            )
        )
    seen: list[ledger_pb2.Posting] = []
    token, pages = "", 0
    while True:
        page = bank.ledger.ListPostings(
            ledger_pb2.ListPostingsRequest(account_number=alice, page_token=token, page_size=7)
        )
        seen.extend(page.postings)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 4 and len(seen) == 26
    assert [p.sequence for p in seen] == sorted(p.sequence for p in seen)
    assert seen[0].kind == ledger_pb2.TRANSFER_KIND_DEPOSIT and seen[0].amount == 1_000_000
    assert [p.amount for p in seen[1:]] == [-a for a in range(1, 26)]
    running = 0
    for posting in seen:
        running += posting.amount
        assert posting.balance_after == running
    assert all(p.counterparty == bob for p in seen[1:])


def test_hold_capture_in_part_releases_the_rest(bank: Bank) -> None:
    alice, shop = bank.open("hold-alice"), bank.open("hold-shop")
    bank.deposit(alice, 10_000)
    hold = bank.ledger.CreateHold(
        ledger_pb2.CreateHoldRequest(
            request_id=rid(), account_number=alice, to_account=shop, amount=8_000, currency=CNY
        )
    ).hold
    state = bank.accounts.GetAccount(account_pb2.GetAccountRequest(account_number=alice)).account
    assert (state.balance, state.held, state.available_balance) == (10_000, 8_000, 2_000)

    with pytest.raises(grpc.RpcError) as refused:  # the held money cannot be spent twice
        bank.ledger.Withdraw(
            ledger_pb2.WithdrawRequest(request_id=rid(), account_number=alice, amount=2_001, currency=CNY)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    captured = bank.ledger.CaptureHold(
        ledger_pb2.CaptureHoldRequest(request_id=rid(), hold_id=hold.hold_id, amount=5_000)
    )
    assert captured.hold.status == ledger_pb2.HOLD_STATUS_CAPTURED
    assert captured.hold.captured_amount == 5_000
    assert captured.transfer.kind == ledger_pb2.TRANSFER_KIND_HOLD_CAPTURE
    state = bank.accounts.GetAccount(account_pb2.GetAccountRequest(account_number=alice)).account
    assert (state.balance, state.held, state.available_balance) == (5_000, 0, 5_000)
    assert bank.balance(shop) == 5_000

    with pytest.raises(grpc.RpcError) as again:
        bank.ledger.VoidHold(ledger_pb2.VoidHoldRequest(request_id=rid(), hold_id=hold.hold_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_void_releases_the_hold(bank: Bank) -> None:
    alice, shop = bank.open("void-alice"), bank.open("void-shop")
    bank.deposit(alice, 3_000)
    hold = bank.ledger.CreateHold(
        ledger_pb2.CreateHoldRequest(
            request_id=rid(), account_number=alice, to_account=shop, amount=3_000, currency=CNY
        )
    ).hold
    voided = bank.ledger.VoidHold(ledger_pb2.VoidHoldRequest(request_id=rid(), hold_id=hold.hold_id)).hold
    assert voided.status == ledger_pb2.HOLD_STATUS_VOIDED
    state = bank.accounts.GetAccount(account_pb2.GetAccountRequest(account_number=alice)).account
    assert (state.balance, state.held) == (3_000, 0)
    assert bank.balance(shop) == 0


def test_expired_hold_releases_its_funds(bank: Bank) -> None:
    alice, shop = bank.open("expire-alice"), bank.open("expire-shop")
    bank.deposit(alice, 4_000)
    hold = bank.ledger.CreateHold(
        ledger_pb2.CreateHoldRequest(
            request_id=rid(),
            account_number=alice,
            to_account=shop,
            amount=4_000,
            currency=CNY,
            timeout_seconds=1,
        )
    ).hold
    state = bank.accounts.GetAccount(account_pb2.GetAccountRequest(account_number=alice)).account
    assert state.available_balance == 0

    # The sweeper books the release; wait for the database to show it (bounded).
    eventually(
        lambda: bank.sql("SELECT status FROM holds WHERE hold_id = %s", (hold.hold_id,)) == [("EXPIRED",)],
        10,
        "the expired hold released by the sweeper",
    )
    state = bank.accounts.GetAccount(account_pb2.GetAccountRequest(account_number=alice)).account
    assert (state.balance, state.held, state.available_balance) == (4_000, 0, 4_000)
    got = bank.ledger.GetHold(ledger_pb2.GetHoldRequest(hold_id=hold.hold_id)).hold
    assert got.status == ledger_pb2.HOLD_STATUS_EXPIRED
    with pytest.raises(grpc.RpcError) as late:
        bank.ledger.CaptureHold(ledger_pb2.CaptureHoldRequest(request_id=rid(), hold_id=hold.hold_id))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (late.value.details() or "")
    assert bank.balance(shop) == 0


def test_freeze_unfreeze_close(bank: Bank) -> None:
    alice = bank.open("status-alice")
    frozen = bank.accounts.FreezeAccount(
        account_pb2.FreezeAccountRequest(request_id=rid(), account_number=alice, reason="court order")
    ).account
    assert frozen.status == account_pb2.ACCOUNT_STATUS_FROZEN
    with pytest.raises(grpc.RpcError) as refused:
        bank.deposit(alice, 100)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "frozen" in (refused.value.details() or "")
    active = bank.accounts.UnfreezeAccount(
        account_pb2.UnfreezeAccountRequest(request_id=rid(), account_number=alice)
    ).account
    assert active.status == account_pb2.ACCOUNT_STATUS_ACTIVE
    bank.deposit(alice, 100)
    bank.ledger.Withdraw(
        ledger_pb2.WithdrawRequest(request_id=rid(), account_number=alice, amount=100, currency=CNY)
    )
    closed = bank.accounts.CloseAccount(
        account_pb2.CloseAccountRequest(request_id=rid(), account_number=alice)
    ).account
    assert closed.status == account_pb2.ACCOUNT_STATUS_CLOSED
    assert closed.version > frozen.version


def test_overdraft_limit_lets_balance_go_below_zero_only_that_far(bank: Bank) -> None:
    alice, bob = bank.open("od-alice", overdraft_limit=5_000), bank.open("od-bob")
    bank.ledger.Transfer(
        ledger_pb2.TransferRequest(
            request_id=rid(), from_account=alice, to_account=bob, amount=5_000, currency=CNY
        )
    )
    assert bank.balance(alice) == -5_000
    with pytest.raises(grpc.RpcError) as refused:
        bank.ledger.Transfer(
            ledger_pb2.TransferRequest(
                request_id=rid(), from_account=alice, to_account=bob, amount=1, currency=CNY
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_health_and_reflection_are_served(bank: Bank) -> None:
    health = health_pb2_grpc.HealthStub(bank.channel)
    for service in ("", "bank.v1.AccountService", "bank.v1.LedgerService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(bank.channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"bank.v1.AccountService", "bank.v1.LedgerService", "grpc.health.v1.Health"} <= names


def customers_in_slots(count: int) -> tuple[list[str], str]:
    """`count` customer ids that share one slot, and one in another slot."""
    by_slot: dict[int, list[str]] = {}
    for i in range(100_000):
        name = f"serial-customer-{i}"
        group = by_slot.setdefault(slot_of_customer(name), [])
        group.append(name)
        if len(group) == count:
            other = next(c for s, g in by_slot.items() if s != slot_of_customer(name) for c in g)
            return group, other
    raise AssertionError("no slot with enough customers")


def test_account_serials_count_per_slot_not_per_shard(bank: Bank) -> None:
    """A slot's serial counter moves with the slot, so numbers stay unique wherever it lives."""
    same_slot, elsewhere = customers_in_slots(3)
    slot = slot_of_customer(same_slot[0])
    before = bank.sql("SELECT coalesce(max(last_serial), 0) FROM slot_serials WHERE slot = %s", (slot,))[0][0]
    numbers = [bank.open(customer) for customer in same_slot]
    assert [int(n[4:15]) for n in numbers] == [before + 1, before + 2, before + 3]
    assert all(slot_of_account(n) == slot for n in numbers)
    other = bank.open(elsewhere)
    other_slot = slot_of_account(other)
    assert bank.sql("SELECT last_serial FROM slot_serials WHERE slot = %s", (other_slot,)) == [
        (int(other[4:15]),)
    ]
    assert bank.sql("SELECT last_serial FROM slot_serials WHERE slot = %s", (slot,)) == [(before + 3,)]
