"""Holds move with their accounts: a hold placed before its account's slot moves is seen, counted
in the account's available balance, captured and voided on the slot's new shard, each once."""

from __future__ import annotations

import uuid

from bank.v1 import ledger_pb2 as L
from services.common.identifiers import slot_of_account
from tests.integration.cluster_helpers import Cluster, bankctl, shard_owning
from tests.integration.move_load import customers_in

SLOTS = (100, 103)  # shard 0 in the default map
CNY = "CNY"


def rid() -> str:
    return uuid.uuid4().hex


def move(cluster: Cluster, to: int) -> None:
    done = bankctl(cluster.home, "move-slots", "--slots", f"{SLOTS[0]}-{SLOTS[1]}", "--to", str(to))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_holds_move_with_their_accounts(bank_cluster: Cluster) -> None:
    source = shard_owning(bank_cluster, SLOTS[0])
    target = next(s["shard"] for s in bank_cluster.status()["shards"] if s["shard"] != source)
    with bank_cluster.client(deadline_s=10) as client:
        # Two accounts of one slot: a hold pays an account of its own shard, wherever moves take it.
        by_slot: dict[int, list[str]] = {}
        for customer in customers_in(*SLOTS, 40, "held"):
            number = client.open_account(customer, CNY).account_number
            by_slot.setdefault(slot_of_account(number), []).append(number)
        payer, payee = next(numbers for numbers in by_slot.values() if len(numbers) >= 2)[:2]
        client.deposit(payer, 10_000, CNY)

        def hold(amount: int) -> str:
            made = client.call("ledger", "CreateHold", L.CreateHoldRequest(
                request_id=rid(), account_number=payer, to_account=payee, amount=amount, currency=CNY,
                timeout_seconds=3600,
            ))  # fmt: skip
            return str(made.hold.hold_id)

        captured_later, voided_later = hold(3_000), hold(2_000)
        before = client.get_account(payer)
        assert (before.balance, before.held, before.available_balance) == (10_000, 5_000, 5_000)

        move(bank_cluster, target)
        assert shard_owning(bank_cluster, slot_of_account(payer)) == target
        moved = client.call("ledger", "GetHold", L.GetHoldRequest(hold_id=captured_later)).hold
        assert (moved.status, moved.amount, moved.account_number) == (L.HOLD_STATUS_ACTIVE, 3_000, payer)
        after = client.get_account(payer)
        assert (after.balance, after.held, after.available_balance) == (10_000, 5_000, 5_000)

        capture = L.CaptureHoldRequest(request_id=rid(), hold_id=captured_later, amount=2_500)
        first = client.call("ledger", "CaptureHold", capture)
        again = client.call("ledger", "CaptureHold", capture)  # a retry: the same answer, no second capture
        assert first.transfer.transfer_id == again.transfer.transfer_id
        assert first.hold.status == L.HOLD_STATUS_CAPTURED and first.hold.captured_amount == 2_500
        voided = client.call("ledger", "VoidHold", L.VoidHoldRequest(request_id=rid(), hold_id=voided_later))
        assert voided.hold.status == L.HOLD_STATUS_VOIDED
        settled = client.get_account(payer)
        assert (settled.balance, settled.held, settled.available_balance) == (7_500, 0, 7_500)
        assert client.get_account(payee).balance == 2_500
        # No hold of the account is left on the slot's old shard, nor in force twice anywhere.
        holds = "SELECT count(*) FROM holds WHERE account_number = %s AND status = 'ACTIVE'"
        assert [bank_cluster.sql(s, holds, (payer,)) for s in (source, target)] == [[(0,)], [(0,)]]
    move(bank_cluster, source)
    assert bank_cluster.check(wait_s=30)["reconciled"]
