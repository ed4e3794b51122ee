"""One open transaction on a shard's primary, with the statements a handler composes.

Accounts are always locked in account-number order, then holds, so that concurrent movements
over the same accounts serialize without deadlocking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from services.common.errors import BankError
from services.common.identifiers import slot_of_account, slot_of_routed_id
from services.common.model import Account, Hold, Transfer
from services.storage import slots as slot_fence
from services.storage.sql import (
    SQL_BOOK,
    SQL_BOOK_TRANSFER_SET,
    SQL_CLAIM_REQUEST,
    SQL_EXPIRE_HOLDS,
    SQL_FIND_HOLD,
    SQL_FINISH_DELIVERED,
    SQL_FINISH_DELIVERY,
    SQL_FINISH_HOLD,
    SQL_INSERT_ACCOUNT,
    SQL_INSERT_HOLD,
    SQL_INSERT_OUTBOX,
    SQL_INSERT_POSTING,
    SQL_INSERT_TRANSFER,
    SQL_KNOWN_TRANSFERS,
    SQL_LOCK_ACCOUNTS,
    SQL_LOCK_DELIVERY,
    SQL_LOCK_HOLD,
    SQL_LOCK_ROWS,
    SQL_POSTPONE_DELIVERY,
    SQL_PRIOR_REQUEST,
    SQL_RELEASE_HELD,
    SQL_RESERVE_SERIALS,
    SQL_SAVE_RESULT,
    SQL_SET_TRANSFER_STATUS,
    SQL_TRANSIT_PAID,
    SQL_UPDATE_MONEY,
    SQL_UPDATE_STATUS,
)


def to_json(value: Any) -> str:
    """JSON text of rows and lists for the statements (orjson: the stdlib's encoder was a tenth
    of a node's CPU on batches)."""
    return orjson.dumps(value).decode()


def account_slots(numbers: Iterable[str]) -> set[int]:
    """The slots of customer accounts (a system account belongs to no slot)."""
    return {slot_of_account(n) for n in numbers if not n.startswith("SYS:")}


def first_of_slot(numbers: list[str], slot: int) -> str:
    return next(n for n in numbers if n.startswith(f"{slot:04d}"))


def reserve_serials(conn: psycopg.Connection[Any], counts: dict[int, int]) -> dict[int, list[int]]:
    """`counts[slot]` new serials of each slot's account numbers, in one statement (the slots'
    counters stay locked until the transaction ends, so serials are never handed out twice)."""
    slots = sorted(counts)
    rows = conn.execute(SQL_RESERVE_SERIALS, (slots, [counts[s] for s in slots])).fetchall()
    return {int(slot): list(range(int(last) - counts[slot] + 1, int(last) + 1)) for slot, last in rows}


def system_account(purpose: str, currency: str) -> str:
    """The name of a shard's system account, e.g. SYS:CASH:CNY for money entering or leaving."""
    return f"SYS:{purpose}:{currency}"


@dataclass(frozen=True)
class PriorRequest:
    operation: str
    fingerprint: str
    result: dict[str, Any]


@dataclass
class Booking:
    """The rows a group of movements writes, gathered column by column (see `LedgerTx.book`)."""

    transfers: list[Transfer] = field(default_factory=list)
    postings: list[tuple[str, str, int, str, int | None, str]] = field(default_factory=list)
    outbox: list[tuple[str, int, str, str, int, str]] = field(default_factory=list)
    balances: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # number -> balance, held, bump

    def post(
        self, transfer: Transfer, lines: list[tuple[str, int, int | None, str]], with_transfer: bool = True
    ) -> None:
        """A transfer and its lines (account, signed amount, balance after, counterparty); only
        the lines when the transfer's row is there already (`with_transfer` False)."""
        assert sum(amount for _, amount, _, _ in lines) == 0, lines
        if with_transfer:
            self.transfers.append(transfer)
        self.postings.extend(
            (transfer.transfer_id, account, amount, transfer.currency, after, other)
            for account, amount, after, other in lines
        )

    def parameters(self) -> dict[str, str]:
        """The statement's parameters: one JSON array of rows per table."""
        transfers = [
            (t.transfer_id, t.request_id, t.kind, t.from_account, t.to_account, t.amount, t.currency,
             t.status, t.reference, t.failure_reason, t.hold_id)
            for t in self.transfers
        ]  # fmt: skip
        balances = [(n, *figures) for n, figures in sorted(self.balances.items())]
        tables = {
            "transfers": transfers, "postings": self.postings, "outbox": self.outbox,
            "balances": balances,
        }  # fmt: skip
        return {name: to_json(rows) for name, rows in tables.items()}


class LedgerTx:
    """One open transaction on the shard's primary."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def claim_request(self, request_id: str, operation: str, fingerprint: str) -> PriorRequest | None:
        """Reserves a request id for this transaction, or returns what it already holds.

        A concurrent claim of the same id waits here until the first transaction ends.
        """
        if self.conn.execute(SQL_CLAIM_REQUEST, (request_id, operation, fingerprint)).fetchone():
            return None
        row = self.conn.execute(SQL_PRIOR_REQUEST, (request_id,)).fetchone()
        assert row is not None, f"request {request_id} conflicted but is not there"
        return PriorRequest(operation=row[0], fingerprint=row[1], result=row[2])

    def book(self, booking: Booking) -> None:
        """Writes a group's transfers, postings, outbox rows and new balances in one statement."""
        self.conn.execute(SQL_BOOK, booking.parameters())

    def book_transfer_set(self, rows: list[tuple[Any, ...]]) -> tuple[datetime, dict[str, Any]]:
        """Books a set of transfers in the database (functions/book_transfer_set.sql says what the
        rows hold and what comes back): the transaction's time and the outcome."""
        row = self.conn.execute(SQL_BOOK_TRANSFER_SET, (to_json(rows),)).fetchone()
        assert row is not None
        return row[0], orjson.loads(row[1])

    def save_request_result(self, request_id: str, result: dict[str, Any]) -> None:
        self.conn.execute(SQL_SAVE_RESULT, (Jsonb(result), request_id))

    def next_account_serial(self, slot: int) -> int:
        """The next serial of an account number in `slot` (the slot's own counter)."""
        return reserve_serials(self.conn, {slot: 1})[slot][0]

    def insert_account(
        self, number: str, slot: int, customer_id: str, currency: str, overdraft_limit: int
    ) -> Account:
        cur = self.conn.cursor(row_factory=class_row(Account))
        account = cur.execute(
            SQL_INSERT_ACCOUNT, (number, slot, customer_id, currency, overdraft_limit)
        ).fetchone()
        assert account is not None
        return account

    def lock_rows(self, numbers: Iterable[str]) -> None:
        """Locks accounts in the one order every transaction uses (a batch, before its units)."""
        self.conn.execute(SQL_LOCK_ROWS, (to_json(sorted(set(numbers))),))

    def unwritable(self, slots: Iterable[int], what: Callable[[int], str]) -> dict[int, BankError]:
        """The slots among `slots` this shard may not write now, with their refusals (see
        services.storage.slots); the answer holds until this transaction ends."""
        return slot_fence.unwritable(self.conn, slots, what)

    def fence(self, slots: Iterable[int], what: Callable[[int], str]) -> None:
        """Refuses the write unless this shard may write every one of `slots` now."""
        refused = self.unwritable(slots, what)
        if refused:
            raise refused[min(refused)]

    def lock_accounts(self, numbers: Iterable[str], fence: bool = True) -> dict[str, Account]:
        """Locks the named accounts in a fixed order and releases their expired holds; first,
        unless the caller did (`fence`), refuses the write if a slot of theirs is not writable."""
        wanted = sorted(set(numbers))
        if fence:
            self.fence(account_slots(wanted), lambda slot: f"account {first_of_slot(wanted, slot)}")
        cur = self.conn.cursor(row_factory=class_row(Account))
        locked = {a.account_number: a for a in cur.execute(SQL_LOCK_ACCOUNTS, (to_json(wanted),))}
        if locked:
            locked.update(self._release_expired_holds(list(locked)))
        return locked

    def _release_expired_holds(self, numbers: list[str]) -> dict[str, Account]:
        released: dict[str, int] = {}
        for number, amount in self.conn.execute(SQL_EXPIRE_HOLDS, (to_json(numbers),)):
            released[number] = released.get(number, 0) + amount
        cur = self.conn.cursor(row_factory=class_row(Account))
        updated: dict[str, Account] = {}
        for number, amount in released.items():
            account = cur.execute(SQL_RELEASE_HELD, (amount, number)).fetchone()
            assert account is not None
            updated[number] = account
        return updated

    def update_money(self, number: str, balance: int, held: int) -> Account:
        cur = self.conn.cursor(row_factory=class_row(Account))
        account = cur.execute(SQL_UPDATE_MONEY, (balance, held, number)).fetchone()
        assert account is not None
        return account

    def update_status(self, number: str, status: str) -> Account:
        cur = self.conn.cursor(row_factory=class_row(Account))
        account = cur.execute(SQL_UPDATE_STATUS, (status, number)).fetchone()
        assert account is not None
        return account

    def insert_transfer(self, transfer: Transfer) -> Transfer:
        """Stores a transfer; its creation time is the database's."""
        cur = self.conn.cursor(row_factory=class_row(Transfer))
        stored = cur.execute(
            SQL_INSERT_TRANSFER,
            (
                transfer.transfer_id,
                transfer.request_id,
                transfer.kind,
                transfer.from_account,
                transfer.to_account,
                transfer.amount,
                transfer.currency,
                transfer.status,
                transfer.reference,
                transfer.failure_reason,
                transfer.hold_id,
            ),
        ).fetchone()
        assert stored is not None
        return stored

    @property
    def outbox(self) -> DeliveryTx:
        return DeliveryTx(self.conn)

    def known_transfers(self, transfer_ids: list[str]) -> dict[str, tuple[str, str]]:
        """The status and failure reason of those of `transfer_ids` this shard has booked."""
        rows = self.conn.execute(SQL_KNOWN_TRANSFERS, (to_json(transfer_ids),))
        return {str(t): (str(status), str(reason)) for t, status, reason in rows}

    def set_transfer_status(self, transfer_id: str, status: str, reason: str = "") -> Transfer:
        cur = self.conn.cursor(row_factory=class_row(Transfer))
        transfer = cur.execute(SQL_SET_TRANSFER_STATUS, (status, reason[:500], transfer_id)).fetchone()
        assert transfer is not None
        return transfer

    def insert_postings(self, transfer: Transfer, lines: list[tuple[str, int, int | None, str]]) -> None:
        """Books the lines (account, signed amount, balance after, counterparty) of a transfer.

        The lines of one transfer must sum to zero: that is what double entry means.
        """
        assert sum(amount for _, amount, _, _ in lines) == 0, lines
        with self.conn.cursor() as cur:
            cur.executemany(
                SQL_INSERT_POSTING,
                [
                    (transfer.transfer_id, account, amount, transfer.currency, after, other)
                    for account, amount, after, other in lines
                ],
            )

    def insert_hold(
        self, hold_id: str, account: str, to_account: str, amount: int, currency: str, timeout_s: int
    ) -> Hold:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        hold = cur.execute(
            SQL_INSERT_HOLD, (hold_id, account, to_account, amount, currency, timeout_s)
        ).fetchone()
        assert hold is not None
        return hold

    def find_hold(self, hold_id: str) -> Hold | None:
        """Reads a hold without locking it (to learn which accounts to lock first)."""
        cur = self.conn.cursor(row_factory=class_row(Hold))
        return cur.execute(SQL_FIND_HOLD, (hold_id,)).fetchone()

    def lock_hold(self, hold_id: str) -> Hold | None:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        return cur.execute(SQL_LOCK_HOLD, (hold_id,)).fetchone()

    def finish_hold(self, hold_id: str, status: str, captured: int, transfer_id: str) -> Hold:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        hold = cur.execute(SQL_FINISH_HOLD, (status, captured, transfer_id, hold_id)).fetchone()
        assert hold is not None
        return hold


@dataclass(frozen=True)
class Delivery:
    """A credit owed to another shard, as the outbox holds it."""

    transfer_id: str
    target_shard: int
    from_account: str
    to_account: str
    amount: int
    currency: str
    attempts: int


class DeliveryTx:
    """The outbox statements, on the transaction of a `LedgerTx`."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def insert(self, transfer: Transfer, target_shard: int) -> None:
        self.conn.execute(
            SQL_INSERT_OUTBOX,
            (
                transfer.transfer_id,
                target_shard,
                transfer.from_account,
                transfer.to_account,
                transfer.amount,
                transfer.currency,
            ),
        )

    def lock(self, transfer_id: str) -> Delivery | None:
        cur = self.conn.cursor(row_factory=class_row(Delivery))
        return cur.execute(SQL_LOCK_DELIVERY, (transfer_id,)).fetchone()

    def finish_delivered(self, transfer_ids: list[str]) -> None:
        """Finishes the deliveries the targets booked, but those of slots no longer writable
        here (their outbox rows moved with them: the new shard finishes them)."""
        writable = self._writable(transfer_ids)
        if writable:
            self.conn.execute(SQL_FINISH_DELIVERED, (to_json(writable),))

    def finish(self, transfer_id: str, status: str, error: str = "") -> None:
        self.conn.execute(SQL_FINISH_DELIVERY, (status, error, transfer_id))

    def transit_paid(self, transfer_ids: list[str]) -> set[str]:
        """Among transfers whose row here is a debit's, those whose credit is booked here too
        (a transit line paid out): a slot moved here after the debit."""
        return {r[0] for r in self.conn.execute(SQL_TRANSIT_PAID, (transfer_ids,))}

    def postpone(self, transfer_id: str, error: str, delay_s: float) -> None:
        if self._writable([transfer_id]):
            self.conn.execute(SQL_POSTPONE_DELIVERY, (error[:500], delay_s, transfer_id))

    def _writable(self, transfer_ids: list[str]) -> list[str]:
        """The transfers (by the slot in their ids, their debited account's) this shard may write."""
        refused = slot_fence.unwritable(
            self.conn, {slot_of_routed_id(t) for t in transfer_ids}, lambda slot: "outbox"
        )
        return [t for t in transfer_ids if slot_of_routed_id(t) not in refused]


# What the node's metrics ask the primary at each scrape: the outbox's depth and age, and
# how far behind each standby is (bytes of WAL not yet replayed, and the time that took).
