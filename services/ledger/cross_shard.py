"""Transfers whose two accounts live on different shards.

Before the debit, the source asks the target's shard whether it would take the credit now
(`check_credits`: the account exists, is active, holds the currency, has room for the amount),
so that a bad target is refused at once with the code, reason and message a transfer within
one shard gets. The source shard then books the debit against its transit account and an outbox row in one
transaction and answers PENDING. A relay delivers the credit: the target shard books it under
the same transfer id (so a repeated delivery is recognised and changes nothing) or refuses it
for good; the source then marks the transfer COMMITTED, or refunds the debit and marks it FAILED.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from services.common.account_rules import (
    credited_balance,
    require_account,
    require_active,
    require_currency,
)
from services.common.errors import BankError
from services.common.identifiers import slot_of_account
from services.common.model import COMMITTED, FAILED, PENDING, TRANSFER, Account, Transfer, evolve
from services.storage.ledger_store import LedgerStore
from services.storage.ledger_tx import (
    Booking,
    Delivery,
    LedgerTx,
    account_slots,
    first_of_slot,
    system_account,
)

TRANSIT = "TRANSIT"
REFUNDED = "REFUNDED"
MAX_RETRY_DELAY_S = 5.0


@dataclass(frozen=True)
class CreditOutcome:
    applied: bool
    reason: str = ""  # the stable reason word of a refusal
    message: str = ""
    later: bool = False  # not booked now (its slot is moving): deliver it again later


@dataclass(frozen=True)
class CreditCheck:
    """A credit a transfer is about to owe another shard, checked there before the debit."""

    to_account: str
    currency: str
    amount: int


class TargetCheck(Protocol):
    """Asks the shard `target_shard` about credits: per credit None (it would take it now) or
    the refusal it would give. Raises a retryable BankError when that shard cannot answer."""

    def __call__(self, target_shard: int, credits: list[CreditCheck]) -> list[BankError | None]: ...


class CrossShardLedger:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def check_credits(self, credits: list[CreditCheck]) -> list[BankError | None]:
        """The target's side of the check (reads only): the refusal each credit would get now,
        by the rules and in the words of a transfer within one shard."""
        found = self.store.read(lambda reader: reader.get_accounts(sorted({c.to_account for c in credits})))
        return [_credit_refusal(found, credit) for credit in credits]

    def apply_credit(self, transfer: Transfer) -> CreditOutcome:
        """The target's half, at most once per transfer id; a refusal is remembered too."""
        return self.apply_credits([transfer])[0]

    def apply_credits(self, transfers: list[Transfer]) -> list[CreditOutcome]:
        """Many credits in one transaction, each at most once per transfer id (see book_credits)."""
        return self.store.run(lambda tx: book_credits(tx, transfers))

    def due_deliveries(self, limit: int = 50) -> list[Delivery]:
        return self.store.read(lambda reader: reader.due_deliveries(limit))

    def delivered_all(self, transfer_ids: list[str]) -> None:
        """Finishes the transfers whose credits the target booked (those still pending)."""
        if transfer_ids:
            self.store.run(lambda tx: tx.outbox.finish_delivered(transfer_ids))

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


def _credit_refusal(accounts: dict[str, Account], credit: CreditCheck) -> BankError | None:
    try:
        target = require_account(accounts, credit.to_account, "to_account")
        require_active(target, "to_account")
        require_currency(target, credit.currency, "to_account")
        credited_balance(target, credit.amount, "amount")
    except BankError as refusal:
        return refusal
    return None


def _with(transfer: Transfer, status: str, reason: str) -> Transfer:
    return Transfer(
        transfer_id=transfer.transfer_id, request_id=transfer.request_id, kind=TRANSFER,
        from_account=transfer.from_account, to_account=transfer.to_account, amount=transfer.amount,
        currency=transfer.currency, status=status, reference=transfer.reference, failure_reason=reason,
        hold_id="", created_at=transfer.created_at,
    )  # fmt: skip


def book_credits(tx: LedgerTx, transfers: list[Transfer]) -> list[CreditOutcome]:
    """The target's half of many transfers, as one set: a credit already booked (or refused)
    answers what it got then; the others are checked in order against the balances so far and
    written in one statement, a refusal as a FAILED transfer. Two deliveries of one transfer
    racing each other cannot both write it: the second fails on its key and runs again."""
    first: dict[str, Transfer] = {}
    for transfer in transfers:
        first.setdefault(transfer.transfer_id, transfer)
    known = tx.known_transfers(list(first))
    # A PENDING row here is a debit's, not a credit's: the transfer was debited on this shard (or
    # on a slot that has moved away since) and its credit's slot lives here now. The credit is
    # owed until a transit line of it is paid out here.
    owed = {t for t, (status, _) in known.items() if status == PENDING}
    paid = tx.outbox.transit_paid(sorted(owed)) if owed else set()
    outcomes = {
        tid: CreditOutcome(status == COMMITTED or tid in paid, reason, "already delivered")
        for tid, (status, reason) in known.items()
        if tid not in owed or tid in paid
    }
    fresh = [t for tid, t in first.items() if tid not in outcomes]
    targets = sorted({t.to_account for t in fresh})
    refused = tx.unwritable(account_slots(targets), lambda slot: f"to_account {first_of_slot(targets, slot)}")
    for transfer in fresh:
        moving = refused.get(slot_of_account(transfer.to_account))
        if moving is not None:
            outcomes[transfer.transfer_id] = CreditOutcome(False, moving.reason, moving.message, later=True)
    fresh = [t for t in fresh if t.transfer_id not in outcomes]
    if fresh:
        live = dict(tx.lock_accounts((t.to_account for t in fresh), fence=False))
        moves: Counter[str] = Counter()
        booking = Booking()
        for transfer in fresh:
            target, amount = transfer.to_account, transfer.amount
            try:
                credit = require_account(live, target, "to_account")
                require_active(credit, "to_account")
                require_currency(credit, transfer.currency, "to_account")
                balance = credited_balance(credit, amount, "amount")
            except BankError as refusal:
                if refusal.retryable:
                    raise
                if transfer.transfer_id not in owed:  # a local debit's row is refunded by the relay
                    booking.transfers.append(_with(transfer, FAILED, refusal.reason))
                outcomes[transfer.transfer_id] = CreditOutcome(False, refusal.reason, refusal.message)
                continue
            transit, source = system_account(TRANSIT, transfer.currency), transfer.from_account
            lines = [(transit, -amount, None, source), (target, amount, balance, source)]
            booking.post(
                _with(transfer, COMMITTED, ""), lines, with_transfer=transfer.transfer_id not in owed
            )
            if transfer.transfer_id in owed:
                tx.set_transfer_status(transfer.transfer_id, COMMITTED)
            live[target] = evolve(credit, balance=balance)
            moves[target] += 1
            outcomes[transfer.transfer_id] = CreditOutcome(True)
        booking.balances = {n: (live[n].balance, live[n].held, count) for n, count in moves.items()}
        tx.book(booking)
    return [outcomes[t.transfer_id] for t in transfers]
