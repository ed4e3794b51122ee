"""The checks every movement makes of the accounts it touches, stated once.

A set of transfers is decided by the same checks written in PL/pgSQL (book_transfer_set, made by
services/storage/functions/book_transfer_set.sql) and its refusals worded here (services/ledger/
booking.py): a change to a check a transfer makes belongs in both, as a new migration that
replaces the function; the node logs `event=rules_disagree` when they differ."""

from __future__ import annotations

from services.common.errors import (
    AccountNotActive,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidArgument,
    NotFound,
)
from services.common.model import ACTIVE, Account
from services.common.money import MAX_BALANCE_MINOR, format_minor


def require_account(accounts: dict[str, Account], number: str, field: str) -> Account:
    account = accounts.get(number)
    if account is None:
        raise NotFound(f"{field}: account {number} does not exist")
    return account


def require_active(account: Account, field: str) -> None:
    if account.status != ACTIVE:
        raise AccountNotActive(f"{field}: account {account.account_number} is {account.status.lower()}")


def require_currency(account: Account, currency: str, field: str) -> None:
    if account.currency != currency:
        raise CurrencyMismatch(
            f"{field}: account {account.account_number} holds {account.currency}, not {currency}"
        )


def require_funds(account: Account, amount: int, field: str) -> None:
    """The account may pay `amount` from its available balance (plus any overdraft limit)."""
    spendable = account.available_balance + account.overdraft_limit
    if amount > spendable:
        raise InsufficientFunds(
            f"{field}: account {account.account_number} has "
            f"{format_minor(account.available_balance, account.currency)} available, "
            f"{format_minor(amount, account.currency)} requested"
        )


def credited_balance(account: Account, amount: int, field: str) -> int:
    """The balance after a credit, refusing one that would leave the int64 range."""
    balance = account.balance + amount
    if balance > MAX_BALANCE_MINOR:
        raise InvalidArgument(
            field, f"crediting {amount} would overflow the balance of account {account.account_number}"
        )
    return balance
