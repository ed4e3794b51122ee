"""Opening accounts and changing their status: the domain logic, free of gRPC."""

from __future__ import annotations

from services.common.account_rules import require_account
from services.common.errors import AccountNotActive, AccountNotEmpty, InvalidArgument, NotFound
from services.common.identifiers import make_account_number, parse_account_number, slot_of_customer
from services.common.model import ACTIVE, CLOSED, FROZEN, Account
from services.common.money import MAX_AMOUNT_MINOR, validate_currency
from services.common.validation import (
    MAX_REASON,
    validate_customer_id,
    validate_free_text,
    validate_request_id,
)
from services.storage.idempotency import run_once
from services.storage.ledger_store import LedgerStore
from services.storage.ledger_tx import LedgerTx


class AccountHandler:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def open_account(
        self, request_id: str, customer_id: str, currency: str, overdraft_limit: int = 0
    ) -> Account:
        validate_request_id(request_id)
        validate_customer_id(customer_id)
        validate_currency(currency)
        if not 0 <= overdraft_limit <= MAX_AMOUNT_MINOR:
            raise InvalidArgument(
                "overdraft_limit", f"must be between 0 and {MAX_AMOUNT_MINOR} (got {overdraft_limit})"
            )
        slot = slot_of_customer(customer_id)

        def work(tx: LedgerTx) -> Account:
            tx.fence([slot], lambda _: f"customer_id: customer {customer_id}")
            number = make_account_number(slot, tx.next_account_serial(slot))
            return tx.insert_account(number, slot, customer_id, currency, overdraft_limit)

        payload = {"customer_id": customer_id, "currency": currency, "overdraft": overdraft_limit}
        return run_once(self.store, "OpenAccount", request_id, payload, work)

    def get_account(self, account_number: str) -> Account:
        parse_account_number(account_number)
        account = self.store.read(lambda reader: reader.get_account(account_number))
        if account is None:
            raise NotFound(f"account_number: account {account_number} does not exist")
        return account

    def freeze_account(self, request_id: str, account_number: str, reason: str = "") -> Account:
        validate_free_text(reason, "reason", MAX_REASON)
        return self._change_status(request_id, account_number, "FreezeAccount", {ACTIVE}, FROZEN)

    def unfreeze_account(self, request_id: str, account_number: str) -> Account:
        return self._change_status(request_id, account_number, "UnfreezeAccount", {FROZEN}, ACTIVE)

    def close_account(self, request_id: str, account_number: str) -> Account:
        return self._change_status(request_id, account_number, "CloseAccount", {ACTIVE}, CLOSED)

    def _change_status(
        self, request_id: str, number: str, operation: str, allowed_from: set[str], target: str
    ) -> Account:
        """Moves an account to `target`; already being there is success and changes nothing."""
        validate_request_id(request_id)
        parse_account_number(number)

        def work(tx: LedgerTx) -> Account:
            account = require_account(tx.lock_accounts([number]), number, "account_number")
            if account.status == target:
                return account
            if account.status not in allowed_from:
                raise AccountNotActive(
                    f"account_number: account {number} is {account.status.lower()};"
                    f" it cannot become {target.lower()}"
                )
            if target == CLOSED:
                _require_empty(account)
            return tx.update_status(number, target)

        return run_once(self.store, operation, request_id, {"account": number}, work)


def _require_empty(account: Account) -> None:
    if account.held:
        raise AccountNotEmpty(
            f"account_number: account {account.account_number} has active holds; void them first"
        )
    if account.balance:
        raise AccountNotEmpty(
            f"account_number: account {account.account_number} has a balance of {account.balance};"
            " it must be zero to close"
        )
