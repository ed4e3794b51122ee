"""Transfers booked as a set: the same rules and rows as one transfer at a time, in a few
statements for a whole group.

A group commit (or a batch request) hands over many transfers of one shard. They are booked
together: their request ids looked up in one statement, their accounts locked and read in one,
the rules applied in order in memory (each transfer sees the balances the earlier ones left),
and every row the accepted ones write (transfers, postings, outbox rows, balances, request
results) written in one. A refused transfer writes nothing. The same function books a single
transfer, so one rule book serves both paths. Two transactions booking the same new request id
at once cannot both write it: the second fails on its key (UniqueViolation), is rolled back,
and runs again, when it finds the first one's answer.

A retry of an acknowledged request id gets its first result; a request id seen twice in one
set is left to run alone after the set (it then finds the first one's result).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.account_rules import (
    credited_balance,
    require_account,
    require_active,
    require_currency,
    require_funds,
)
from services.common.errors import Aborted, BankError
from services.common.model import Account, MoneyMovement, Transfer, evolve, record_to_json
from services.ledger.cross_shard import TRANSIT
from services.storage.idempotency import OnceWork, replay
from services.storage.ledger_tx import Booking, LedgerTx, account_slots, first_of_slot, system_account

OPERATION = "Transfer"
Answer = tuple[bool, Any] | None


@dataclass(frozen=True)
class TransferOrder:
    """A checked transfer request: the transfer as it will be stored (COMMITTED, or PENDING when
    its credit belongs to another shard), the request's fingerprint, and that other shard."""

    transfer: Transfer
    digest: str
    target_shard: int | None = None

    @property
    def accounts(self) -> tuple[str, ...]:
        """The accounts of this shard it locks."""
        t = self.transfer
        return (t.from_account,) if self.target_shard is not None else (t.from_account, t.to_account)


def transfer_work(order: TransferOrder) -> OnceWork[MoneyMovement]:
    """The order as a unit of work: alone it books a set of one; a group commit books it with
    the others of its transaction."""

    def alone(tx: LedgerTx) -> MoneyMovement:
        answer = book_transfers(tx, [order])[0]
        if answer is None:  # its request id is being answered in this transaction: retry later
            raise Aborted(f"request_id {order.transfer.request_id} is being booked concurrently; retry")
        ok, value = answer
        if not ok:
            raise value
        movement: MoneyMovement = value
        return movement

    work = OnceWork(alone, order.accounts)
    work.set_runner = book_transfers
    work.set_item = order
    return work


def book_transfers(tx: LedgerTx, orders: list[TransferOrder]) -> list[Answer]:
    """Books the orders in one go: per order (True, MoneyMovement), (False, the refusal), or
    None for one to run alone afterwards (its request id came earlier in the same set)."""
    answers: list[Answer] = [None] * len(orders)
    first: dict[str, int] = {}
    for index, order in enumerate(orders):
        first.setdefault(order.transfer.request_id, index)
    now, priors = tx.prior_requests(list(first))
    for rid, prior in priors.items():
        order = orders[first[rid]]
        if not prior.result:  # claimed in this very transaction, not yet answered: alone, later
            continue
        try:
            answers[first[rid]] = (True, replay(prior, rid, OPERATION, order.digest))
        except BankError as refusal:
            answers[first[rid]] = (False, refusal)
    mine = _writable(tx, [i for rid, i in first.items() if rid not in priors], orders, answers)
    if not mine:
        return answers
    locked = tx.lock_accounts((a for i in mine for a in orders[i].accounts), fence=False)
    live = dict(locked)
    moves: Counter[str] = Counter()
    booking = Booking()
    for index in mine:
        order = orders[index]
        try:
            movement = _book(order, live, now, booking)
        except BankError as refusal:  # it writes nothing, not even its request id
            answers[index] = (False, refusal)
            continue
        moves.update(order.accounts)
        answered = record_to_json(movement)
        booking.requests.append((order.transfer.request_id, OPERATION, order.digest, answered))
        answers[index] = (True, movement)
    booking.balances = {n: (live[n].balance, live[n].held, count) for n, count in moves.items()}
    tx.book(booking)
    return answers


def _writable(
    tx: LedgerTx, indexes: list[int], orders: list[TransferOrder], answers: list[Answer]
) -> list[int]:
    """The orders whose accounts' slots this shard may write now; the others are answered with
    their refusal (retry-able: the slot is moving, or has moved)."""
    slots = {i: account_slots(orders[i].accounts) for i in indexes}
    numbers = sorted({a for i in indexes for a in orders[i].accounts})
    refused = tx.unwritable(
        {s for of_one in slots.values() for s in of_one},
        lambda slot: f"account {first_of_slot(numbers, slot)}",
    )
    if not refused:
        return indexes
    for index in indexes:
        blocked = sorted(slots[index] & set(refused))
        if blocked:
            answers[index] = (False, refused[blocked[0]])
    return [i for i in indexes if answers[i] is None]


def _book(order: TransferOrder, live: dict[str, Account], now: datetime, booking: Booking) -> MoneyMovement:
    """Checks one transfer against the balances so far and adds its rows; the debited balance."""
    t = order.transfer
    source, target, amount, currency = t.from_account, t.to_account, t.amount, t.currency
    debit = require_account(live, source, "from_account")
    if order.target_shard is not None:
        require_active(debit, "from_account")
        require_currency(debit, currency, "from_account")
        require_funds(debit, amount, "amount")
        balance = debit.balance - amount
        stored = evolve(t, created_at=now)
        transit = system_account(TRANSIT, currency)
        booking.post(stored, [(source, -amount, balance, target), (transit, amount, None, target)])
        booking.outbox.append((t.transfer_id, order.target_shard, source, target, amount, currency))
        live[source] = evolve(debit, balance=balance)
        return MoneyMovement(stored, balance)
    credit = require_account(live, target, "to_account")
    for account, field in ((debit, "from_account"), (credit, "to_account")):
        require_active(account, field)
        require_currency(account, currency, field)
    require_funds(debit, amount, "amount")
    credit_balance = credited_balance(credit, amount, "amount")
    balance = debit.balance - amount
    stored = evolve(t, created_at=now)
    booking.post(stored, [(source, -amount, balance, target), (target, amount, credit_balance, source)])
    live[source] = evolve(debit, balance=balance)
    live[target] = evolve(credit, balance=credit_balance)
    return MoneyMovement(stored, balance)
