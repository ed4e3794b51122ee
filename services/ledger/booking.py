"""Transfers booked as a set: the same rules and rows as one transfer at a time, in one
statement for a whole group.

A group commit (or a batch request) hands over many transfers of one shard. They are booked by
one function in the database (book_transfer_set, services/storage/functions/book_transfer_set.sql):
their request ids looked up, their slots fenced, their accounts locked in order, the rules
applied in order (each transfer sees the balances the earlier ones left), and every row the
accepted ones write (transfers, postings, outbox rows, balances, request results) written, in
one round trip. The node sends
checked requests and reads back the balances after; a refused transfer writes nothing, and its
refusal is worded here by the rules every other movement uses (services.common.account_rules),
from the accounts as the database saw them. The same function books a single transfer, so one
rule book serves both paths. Two transactions booking the same new request id at once cannot
both write it: the second fails on its key (UniqueViolation), is rolled back, and runs again,
when it finds the first one's answer.

A retry of an acknowledged request id gets its first result; a request id seen twice in one
set is left to run alone after the set (it then finds the first one's result).
"""

from __future__ import annotations

import logging
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
from services.common.identifiers import slot_of_account
from services.common.model import Account, MoneyMovement, Transfer, evolve
from services.storage.idempotency import OnceWork, replay
from services.storage.ledger_tx import LedgerTx, PriorRequest, account_slots, first_of_slot
from services.storage.slots import refusal

log = logging.getLogger(__name__)
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
    None for one to run alone afterwards (its request id came earlier in the same set, or this
    transaction claimed it already)."""
    answers: list[Answer] = [None] * len(orders)
    first: dict[str, int] = {}
    for index, order in enumerate(orders):
        first.setdefault(order.transfer.request_id, index)
    sent = list(first.values())
    now, outcome = tx.book_transfer_set([_row(orders[i]) for i in sent])
    priors = {str(rid): PriorRequest(op, digest, result) for rid, op, digest, result in outcome["priors"]}
    for rid, prior in priors.items():
        if prior.result:  # else claimed in this very transaction, not yet answered: alone, later
            answers[first[rid]] = _replayed(prior, rid, orders[first[rid]])
    if outcome["fenced"]:
        unanswered = [i for rid, i in first.items() if rid not in priors]
        _answer_fenced(outcome["fenced"], unanswered, orders, answers)
    for position, debit, credit in outcome["refused"]:
        index = sent[position]
        answers[index] = (False, _refusal(orders[index], [row for row in (debit, credit) if row], now))
    for index, balance in zip(sent, outcome["after"], strict=True):
        if balance is not None:
            answers[index] = (True, MoneyMovement(evolve(orders[index].transfer, created_at=now), balance))
    return answers


def _row(order: TransferOrder) -> tuple[str, str, str, str, str, int, str, str, int | None]:
    """An order as book_transfer_set takes it (functions/book_transfer_set.sql)."""
    t = order.transfer
    return (
        t.request_id, order.digest, t.transfer_id, t.from_account, t.to_account, t.amount, t.currency,
        t.reference, order.target_shard,
    )  # fmt: skip


def _replayed(prior: PriorRequest, request_id: str, order: TransferOrder) -> Answer:
    try:
        return (True, replay(prior, request_id, OPERATION, order.digest))
    except BankError as refusal:
        return (False, refusal)


def _answer_fenced(
    fenced: list[list[Any]], indexes: list[int], orders: list[TransferOrder], answers: list[Answer]
) -> None:
    """Answers the orders whose accounts' slots this shard may not write now with their refusal
    (retry-able: the slot is moving, or has moved); `indexes` are the orders not retried."""
    numbers = sorted({a for i in indexes for a in orders[i].accounts})
    refused = {
        int(slot): refusal(int(slot), state, moved_to, f"account {first_of_slot(numbers, int(slot))}")
        for slot, state, moved_to in fenced
    }
    for index in indexes:
        blocked = sorted(account_slots(orders[index].accounts) & set(refused))
        if blocked:
            answers[index] = (False, refused[blocked[0]])


def _refusal(order: TransferOrder, seen: list[list[Any]], now: datetime) -> BankError:
    """The refusal the rules give the order, worded from the accounts as the database saw them
    ([number, currency, status, balance, held, overdraft limit]) when it refused it."""
    live = {str(row[0]): _account_as_seen(row, now) for row in seen}
    try:
        _check(order, live)
    except BankError as refusal:
        return refusal
    log.error("event=rules_disagree transfer=%s accounts=%s", order.transfer.transfer_id, seen)
    return BankError(f"transfer {order.transfer.transfer_id} was refused by the database's rules alone")


def _account_as_seen(row: list[Any], now: datetime) -> Account:
    """An account as the rules read it: number, currency, status and money (the rest is not
    theirs to read)."""
    number, currency, status, balance, held, limit = row
    return Account(
        account_number=str(number), customer_id="", currency=str(currency), status=str(status),
        balance=int(balance), held=int(held), overdraft_limit=int(limit), version=0,
        slot=slot_of_account(str(number)), opened_at=now,
    )  # fmt: skip


def _check(order: TransferOrder, live: dict[str, Account]) -> None:
    """The rules of a transfer against the accounts' balances so far (raises its refusal)."""
    t = order.transfer
    debit = require_account(live, t.from_account, "from_account")
    if order.target_shard is not None:
        require_active(debit, "from_account")
        require_currency(debit, t.currency, "from_account")
        require_funds(debit, t.amount, "amount")
        return
    credit = require_account(live, t.to_account, "to_account")
    for account, field in ((debit, "from_account"), (credit, "to_account")):
        require_active(account, field)
        require_currency(account, t.currency, field)
    require_funds(debit, t.amount, "amount")
    credited_balance(credit, t.amount, "amount")
