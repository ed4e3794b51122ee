"""Money movements on one shard: deposits, withdrawals, transfers, holds and statements.

Every movement is double entry: its postings sum to zero per currency. Deposits and
withdrawals post against the shard's cash system account. Every mutating call runs once per
request id (see `services.storage.idempotency`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.common.account_rules import (
    credited_balance,
    require_account,
    require_active,
    require_currency,
    require_funds,
)
from services.common.errors import BankError, HoldNotActive, InvalidArgument, NotFound
from services.common.identifiers import (
    new_hold_id,
    new_transfer_id,
    parse_account_number,
    parse_hold_id,
    parse_transfer_id,
)
from services.common.model import (
    CAPTURED,
    COMMITTED,
    DEPOSIT,
    HOLD_ACTIVE,
    HOLD_CAPTURE,
    PENDING,
    TRANSFER,
    VOIDED,
    WITHDRAWAL,
    Account,
    Hold,
    HoldCapture,
    MoneyMovement,
    Posting,
    Transfer,
)
from services.common.money import validate_amount_minor, validate_currency
from services.common.validation import (
    MAX_REFERENCE,
    decode_page_token,
    encode_page_token,
    validate_free_text,
    validate_hold_timeout,
    validate_page_size,
    validate_request_id,
)
from services.ledger.booking import TransferOrder, transfer_work
from services.ledger.cross_shard import CreditCheck, CrossShardLedger, TargetCheck
from services.storage.group_commit import run_all
from services.storage.idempotency import fingerprint, run_once
from services.storage.ledger_reader import LedgerReader
from services.storage.ledger_store import LedgerStore
from services.storage.ledger_tx import LedgerTx, system_account

CASH = "CASH"


def _new_transfer(
    request_id: str, kind: str, source: str, target: str, amount: int, currency: str,
    slot: int | None = None, status: str = COMMITTED, **extra: str,
) -> Transfer:  # fmt: skip
    """A transfer (committed unless told), its id routed by the debited account (or the credited
    one); `slot`: that account's, when the caller has parsed it already."""
    if slot is None:
        slot = parse_account_number(source or target)
    return Transfer(
        transfer_id=new_transfer_id(slot),
        request_id=request_id,
        kind=kind,
        from_account=source,
        to_account=target,
        amount=amount,
        currency=currency,
        status=status,
        reference=extra.get("reference", ""),
        failure_reason="",
        hold_id=extra.get("hold_id", ""),
        created_at=datetime.min,
    )


@dataclass(frozen=True)
class OutgoingTransfer:
    """A cross-shard transfer request whose target is to be checked before its debit."""

    request_id: str
    target_shard: int
    credit: CreditCheck


class LedgerHandler:
    def __init__(self, store: LedgerStore, check_targets: TargetCheck | None = None) -> None:
        self.store = store
        self.cross_shard = CrossShardLedger(store)
        # Asks another shard about a transfer's target before the debit (a lone shard has none).
        self.check_targets = check_targets

    def deposit(
        self, request_id: str, account: str, amount: int, currency: str, reference: str = ""
    ) -> MoneyMovement:
        self._check_movement(request_id, amount, currency, reference, account=account)

        def work(tx: LedgerTx) -> MoneyMovement:
            target = require_account(tx.lock_accounts([account]), account, "account_number")
            require_active(target, "account_number")
            require_currency(target, currency, "currency")
            balance = credited_balance(target, amount, "amount")
            transfer = tx.insert_transfer(
                _new_transfer(request_id, DEPOSIT, "", account, amount, currency, reference=reference)
            )
            tx.update_money(account, balance, target.held)
            tx.insert_postings(
                transfer,
                [(system_account(CASH, currency), -amount, None, ""), (account, amount, balance, "")],
            )
            return MoneyMovement(transfer, balance)

        payload = {"account": account, "amount": amount, "currency": currency, "ref": reference}
        return run_once(self.store, "Deposit", request_id, payload, work, accounts=(account,))

    def withdraw(
        self, request_id: str, account: str, amount: int, currency: str, reference: str = ""
    ) -> MoneyMovement:
        self._check_movement(request_id, amount, currency, reference, account=account)

        def work(tx: LedgerTx) -> MoneyMovement:
            source = require_account(tx.lock_accounts([account]), account, "account_number")
            require_active(source, "account_number")
            require_currency(source, currency, "currency")
            require_funds(source, amount, "amount")
            balance = source.balance - amount
            transfer = tx.insert_transfer(
                _new_transfer(request_id, WITHDRAWAL, account, "", amount, currency, reference=reference)
            )
            tx.update_money(account, balance, source.held)
            tx.insert_postings(
                transfer,
                [(account, -amount, balance, ""), (system_account(CASH, currency), amount, None, "")],
            )
            return MoneyMovement(transfer, balance)

        payload = {"account": account, "amount": amount, "currency": currency, "ref": reference}
        return run_once(self.store, "Withdraw", request_id, payload, work, accounts=(account,))

    def transfer_unit(
        self, request_id: str, source: str, target: str, amount: int, currency: str, reference: str = ""
    ) -> Callable[[LedgerTx], MoneyMovement]:
        """The checked request as a unit of work (at most once per request id), not yet run."""
        return self._transfer_order(request_id, source, target, None, amount, currency, reference)

    def run_batch(
        self, units: Sequence[Callable[[LedgerTx], MoneyMovement]]
    ) -> list[MoneyMovement | BaseException]:
        """Checked transfers of one batch request, booked a few hundred per transaction."""
        return run_all(self.store, units)

    def transfer_out_unit(
        self, request_id: str, source: str, target: str, target_shard: int, amount: int, currency: str,
        reference: str = "", *, checked: bool = False,
    ) -> Callable[[LedgerTx], MoneyMovement]:  # fmt: skip
        """The checked request as a unit of work; its target is asked about first, unless the
        caller did that already (`checked`, as a batch does for all its transfers at once)."""
        unit = self._transfer_order(request_id, source, target, target_shard, amount, currency, reference)
        if not checked:
            credit = CreditCheck(target, currency, amount)
            refusal = self.refused_targets([OutgoingTransfer(request_id, target_shard, credit)])[0]
            if refusal is not None:
                raise refusal
        return unit

    def refused_targets(self, transfers: Sequence[OutgoingTransfer]) -> list[BankError | None]:
        """Per transfer, the refusal its target's shard gives it now (None: it would take the
        credit), one question per target shard. A request id this shard answered already is not
        asked about: its retry gets its first answer whatever its target became since."""
        refusals: list[BankError | None] = [None] * len(transfers)
        if self.check_targets is None or not transfers:
            return refusals
        ids = [t.request_id for t in transfers]
        known = self.store.read(lambda reader: reader.known_requests(ids))
        by_shard: dict[int, list[int]] = {}
        for index, transfer in enumerate(transfers):
            if transfer.request_id not in known:
                by_shard.setdefault(transfer.target_shard, []).append(index)
        for shard, indexes in by_shard.items():
            answers = self.check_targets(shard, [transfers[i].credit for i in indexes])
            for index, answer in zip(indexes, answers, strict=True):
                refusals[index] = answer
        return refusals

    def _transfer_order(
        self, request_id: str, source: str, target: str, target_shard: int | None, amount: int,
        currency: str, reference: str,
    ) -> Callable[[LedgerTx], MoneyMovement]:  # fmt: skip
        """A checked transfer as a unit of work: COMMITTED within this shard, PENDING when its
        credit belongs to `target_shard`. Each account number is parsed once."""
        self._check_movement(request_id, amount, currency, reference)
        slot = parse_account_number(source, "from_account")
        parse_account_number(target, "to_account")
        if source == target:
            raise InvalidArgument("to_account", "must differ from from_account")
        status = COMMITTED if target_shard is None else PENDING
        transfer = _new_transfer(
            request_id, TRANSFER, source, target, amount, currency, slot, status, reference=reference
        )
        payload = {"from": source, "to": target, "amount": amount, "currency": currency, "ref": reference}
        return transfer_work(TransferOrder(transfer, fingerprint("Transfer", payload), target_shard))

    def get_transfer(self, transfer_id: str) -> Transfer:
        parse_transfer_id(transfer_id)
        transfer = self.store.read(lambda reader: reader.get_transfer(transfer_id))
        if transfer is None:
            raise NotFound(f"transfer_id: transfer {transfer_id} does not exist")
        return transfer

    def list_postings(self, account: str, page_token: str, page_size: int) -> tuple[list[Posting], str]:
        """One page of an account's statement, oldest first, and the token of the next page."""
        parse_account_number(account)
        after = decode_page_token(page_token)
        size = validate_page_size(page_size)

        def read(reader: LedgerReader) -> list[Posting]:
            if reader.get_account(account) is None:
                raise NotFound(f"account_number: account {account} does not exist")
            return reader.list_postings(account, after, size + 1)

        postings = self.store.read(read)
        if len(postings) > size:
            return postings[:size], encode_page_token(postings[size - 1].sequence)
        return postings, ""

    def create_hold(
        self,
        request_id: str,
        account: str,
        to_account: str,
        amount: int,
        currency: str,
        timeout_s: int,
    ) -> Hold:
        """Reserves `amount` of `account` for a later capture to `to_account`."""
        self._check_movement(request_id, amount, currency, "", account=account)
        parse_account_number(to_account, "to_account")
        if account == to_account:
            raise InvalidArgument("to_account", "must differ from account_number")
        timeout_s = validate_hold_timeout(timeout_s)

        def work(tx: LedgerTx) -> Hold:
            locked = tx.lock_accounts([account, to_account])
            source = require_account(locked, account, "account_number")
            target = require_account(locked, to_account, "to_account")
            for acct, field in ((source, "account_number"), (target, "to_account")):
                require_active(acct, field)
                require_currency(acct, currency, field)
            require_funds(source, amount, "amount")
            tx.update_money(account, source.balance, source.held + amount)
            hold_id = new_hold_id(source.slot)
            return tx.insert_hold(hold_id, account, to_account, amount, currency, timeout_s)

        payload = {
            "account": account,
            "to": to_account,
            "amount": amount,
            "currency": currency,
            "timeout": timeout_s,
        }
        return run_once(self.store, "CreateHold", request_id, payload, work)

    def capture_hold(self, request_id: str, hold_id: str, amount: int) -> HoldCapture:
        """Pays `amount` (0: all) of an active hold to its target; the rest is released."""
        validate_request_id(request_id)
        parse_hold_id(hold_id)
        if amount < 0:
            raise InvalidArgument("amount", f"must not be negative (got {amount}); 0 captures all")

        def work(tx: LedgerTx) -> HoldCapture:
            hold, locked = self._lock_active_hold(tx, hold_id, with_target=True)
            capture = amount or hold.amount
            if capture > hold.amount:
                raise InvalidArgument("amount", f"{capture} exceeds the hold's {hold.amount}")
            source = require_account(locked, hold.account_number, "hold_id")
            target = require_account(locked, hold.to_account, "hold_id")
            require_active(source, "hold_id")
            require_active(target, "hold_id")
            target_balance = credited_balance(target, capture, "amount")
            source_balance = source.balance - capture
            transfer = tx.insert_transfer(
                _new_transfer(
                    request_id,
                    HOLD_CAPTURE,
                    source.account_number,
                    target.account_number,
                    capture,
                    hold.currency,
                    hold_id=hold_id,
                )
            )
            tx.update_money(source.account_number, source_balance, source.held - hold.amount)
            tx.update_money(target.account_number, target_balance, target.held)
            tx.insert_postings(
                transfer,
                [
                    (source.account_number, -capture, source_balance, target.account_number),
                    (target.account_number, capture, target_balance, source.account_number),
                ],
            )
            captured = tx.finish_hold(hold_id, CAPTURED, capture, transfer.transfer_id)
            return HoldCapture(captured, transfer)

        return run_once(self.store, "CaptureHold", request_id, {"hold": hold_id, "amount": amount}, work)

    def void_hold(self, request_id: str, hold_id: str) -> Hold:
        validate_request_id(request_id)
        parse_hold_id(hold_id)

        def work(tx: LedgerTx) -> Hold:
            hold, locked = self._lock_active_hold(tx, hold_id, with_target=False)
            source = locked[hold.account_number]
            tx.update_money(source.account_number, source.balance, source.held - hold.amount)
            return tx.finish_hold(hold_id, VOIDED, 0, "")

        return run_once(self.store, "VoidHold", request_id, {"hold": hold_id}, work)

    def get_hold(self, hold_id: str) -> Hold:
        parse_hold_id(hold_id)
        hold = self.store.read(lambda reader: reader.get_hold(hold_id))
        if hold is None:
            raise NotFound(f"hold_id: hold {hold_id} does not exist")
        return hold

    def release_expired_holds(self, max_accounts: int = 100) -> int:
        """Releases the funds of expired holds (the sweeper's round); returns accounts touched."""
        numbers = self.store.read(lambda reader: reader.accounts_with_expired_holds(max_accounts))
        for number in numbers:
            self.store.run(lambda tx, n=number: tx.lock_accounts([n]))  # type: ignore[misc]
        return len(numbers)

    @staticmethod
    def _lock_active_hold(
        tx: LedgerTx, hold_id: str, *, with_target: bool
    ) -> tuple[Hold, dict[str, Account]]:
        """Locks a hold that is still active, after its accounts (the store's lock order)."""
        found = tx.find_hold(hold_id)
        if found is None:
            raise NotFound(f"hold_id: hold {hold_id} does not exist")
        numbers = [found.account_number, found.to_account] if with_target else [found.account_number]
        # Locking the account releases the hold if it has expired, so it is read after that.
        locked = tx.lock_accounts(numbers)
        hold = tx.lock_hold(hold_id)
        assert hold is not None and found.account_number in locked
        if hold.status != HOLD_ACTIVE:
            raise HoldNotActive(f"hold_id: hold {hold_id} is {hold.status.lower()}")
        return hold, locked

    @staticmethod
    def _check_movement(
        request_id: str, amount: int, currency: str, reference: str, account: str | None = None
    ) -> None:
        validate_request_id(request_id)
        if account is not None:
            parse_account_number(account)
        validate_currency(currency)
        validate_amount_minor(amount)
        validate_free_text(reference, "reference", MAX_REFERENCE)
