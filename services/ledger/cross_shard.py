"""Transfers whose two accounts live on different shards.

The source shard books the debit against its transit account and an outbox row in one
transaction and answers PENDING. A relay delivers the credit: the target shard books it under
the same transfer id (so a repeated delivery is recognised and changes nothing) or refuses it
for good; the source then marks the transfer COMMITTED, or refunds the debit and marks it FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.account_rules import (
    credited_balance,
    require_account,
    require_active,
    require_currency,
)
from services.common.errors import BankError
from services.common.model import COMMITTED, FAILED, TRANSFER, Transfer
from services.storage.ledger_store import Delivery, LedgerStore, LedgerTx, system_account

TRANSIT = "TRANSIT"
DELIVERED, REFUNDED = "DELIVERED", "REFUNDED"
MAX_RETRY_DELAY_S = 5.0


@dataclass(frozen=True)
class CreditOutcome:
    applied: bool
    reason: str = ""  # the stable reason word of a refusal
    message: str = ""


class CrossShardLedger:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def apply_credit(self, transfer: Transfer) -> CreditOutcome:
        """The target's half, at most once per transfer id; a refusal is remembered too."""
        target = transfer.to_account

        def work(tx: LedgerTx) -> CreditOutcome:
            known = tx.lock_transfer(transfer.transfer_id)
            if known is not None:
                return CreditOutcome(known.status == COMMITTED, known.failure_reason, "already delivered")
            locked = tx.lock_accounts([target])
            try:
                credit = require_account(locked, target, "to_account")
                require_active(credit, "to_account")
                require_currency(credit, transfer.currency, "to_account")
                balance = credited_balance(credit, transfer.amount, "amount")
            except BankError as refusal:
                if refusal.retryable:
                    raise
                tx.insert_transfer(_with(transfer, FAILED, refusal.reason))
                return CreditOutcome(False, refusal.reason, refusal.message)
            stored = tx.insert_transfer(_with(transfer, COMMITTED, ""))
            tx.update_money(target, balance, credit.held)
            tx.insert_postings(
                stored,
                [
                    (
                        system_account(TRANSIT, transfer.currency),
                        -transfer.amount,
                        None,
                        transfer.from_account,
                    ),
                    (target, transfer.amount, balance, transfer.from_account),
                ],
            )
            return CreditOutcome(True)

        return self.store.run(work)

    def due_deliveries(self, limit: int = 50) -> list[Delivery]:
        return self.store.read(lambda reader: reader.due_deliveries(limit))

    def delivered(self, transfer_id: str) -> None:
        def work(tx: LedgerTx) -> None:
            if tx.outbox.lock(transfer_id) is None:
                return  # already finished by an earlier round
            tx.set_transfer_status(transfer_id, COMMITTED)
            tx.outbox.finish(transfer_id, DELIVERED)

        self.store.run(work)

    def refund(self, transfer_id: str, reason: str) -> None:
        """Gives the money back to the source: the target refused the credit for good."""

        def work(tx: LedgerTx) -> None:
            delivery = tx.outbox.lock(transfer_id)
            if delivery is None:
                return
            source = tx.lock_accounts([delivery.from_account])[delivery.from_account]
            # A refund is owed whatever the source's state: frozen or not, the money is its own.
            balance = source.balance + delivery.amount
            tx.update_money(source.account_number, balance, source.held)
            transfer = tx.set_transfer_status(transfer_id, FAILED, reason)
            tx.insert_postings(
                transfer,
                [
                    (system_account(TRANSIT, delivery.currency), -delivery.amount, None, delivery.to_account),
                    (source.account_number, delivery.amount, balance, delivery.to_account),
                ],
            )
            tx.outbox.finish(transfer_id, REFUNDED, reason)

        self.store.run(work)

    def postpone(self, delivery: Delivery, error: str) -> None:
        delay_s = min(0.1 * 2**delivery.attempts, MAX_RETRY_DELAY_S)
        self.store.run(lambda tx: tx.outbox.postpone(delivery.transfer_id, error, delay_s))


def _with(transfer: Transfer, status: str, reason: str) -> Transfer:
    return Transfer(
        transfer_id=transfer.transfer_id, request_id=transfer.request_id, kind=TRANSFER,
        from_account=transfer.from_account, to_account=transfer.to_account, amount=transfer.amount,
        currency=transfer.currency, status=status, reference=transfer.reference, failure_reason=reason,
        hold_id="", created_at=transfer.created_at,
    )  # fmt: skip
