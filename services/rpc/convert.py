"""Turns the bank's records into protobuf messages and protobuf amounts into minor units."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from bank.v1 import account_pb2, ledger_pb2
from services.common.errors import BankError, InvalidArgument
from services.common.model import Account, Hold, MoneyMovement, Posting, Transfer
from services.common.money import parse_decimal_amount, validate_amount_minor, validate_currency


def amount_of(request: Any) -> int:
    """The amount of a request with the `amount_value` oneof, in minor units of its currency."""
    which = request.WhichOneof("amount_value")
    if which is None:
        raise InvalidArgument("amount", "required (minor units in amount, or a decimal in amount_decimal)")
    if which == "amount":
        return validate_amount_minor(request.amount)
    currency = validate_currency(request.currency)
    return parse_decimal_amount(request.amount_decimal, currency)


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def account_to_proto(account: Account) -> account_pb2.Account:
    return account_pb2.Account(
        account_number=account.account_number,
        customer_id=account.customer_id,
        currency=account.currency,
        status=account_pb2.AccountStatus.Value(f"ACCOUNT_STATUS_{account.status}"),
        balance=account.balance,
        available_balance=account.available_balance,
        held=account.held,
        overdraft_limit=account.overdraft_limit,
        version=account.version,
        slot=account.slot,
        opened_at=timestamp(account.opened_at),
    )


def transfer_to_proto(transfer: Transfer) -> ledger_pb2.Transfer:
    return ledger_pb2.Transfer(
        transfer_id=transfer.transfer_id,
        request_id=transfer.request_id,
        kind=ledger_pb2.TransferKind.Value(f"TRANSFER_KIND_{transfer.kind}"),
        from_account=transfer.from_account,
        to_account=transfer.to_account,
        amount=transfer.amount,
        currency=transfer.currency,
        status=transfer_status(transfer.status),
        reference=transfer.reference,
        failure_reason=transfer.failure_reason,
        hold_id=transfer.hold_id,
        created_at=timestamp(transfer.created_at),
    )


def transfer_result(
    index: int, outcome: MoneyMovement | BaseException, full: bool = False
) -> ledger_pb2.TransferResult:
    """One transfer's line in a batch answer: its transfer (in full if asked), or the status it
    alone would get."""
    if isinstance(outcome, MoneyMovement):
        result = ledger_pb2.TransferResult(
            index=index, code="OK", transfer_id=outcome.transfer.transfer_id,
            status=transfer_status(outcome.transfer.status),
        )  # fmt: skip
        if full:
            result.transfer.CopyFrom(transfer_to_proto(outcome.transfer))
        return result
    if isinstance(outcome, BankError):
        return ledger_pb2.TransferResult(
            index=index, code=outcome.status, reason=outcome.reason, message=outcome.message
        )
    return ledger_pb2.TransferResult(
        index=index, code="INTERNAL", message="internal error; see the node's log"
    )


def transfer_status(status: str) -> ledger_pb2.TransferStatus.ValueType:
    return ledger_pb2.TransferStatus.Value(f"TRANSFER_STATUS_{status}")


def posting_to_proto(posting: Posting) -> ledger_pb2.Posting:
    return ledger_pb2.Posting(
        sequence=posting.sequence,
        transfer_id=posting.transfer_id,
        kind=ledger_pb2.TransferKind.Value(f"TRANSFER_KIND_{posting.kind}"),
        amount=posting.amount,
        currency=posting.currency,
        balance_after=posting.balance_after,
        counterparty=posting.counterparty,
        posted_at=timestamp(posting.posted_at),
        business_date=posting.business_date.isoformat(),
    )


def hold_to_proto(hold: Hold) -> ledger_pb2.Hold:
    return ledger_pb2.Hold(
        hold_id=hold.hold_id,
        account_number=hold.account_number,
        to_account=hold.to_account,
        amount=hold.amount,
        captured_amount=hold.captured_amount,
        currency=hold.currency,
        status=ledger_pb2.HoldStatus.Value(f"HOLD_STATUS_{hold.status}"),
        expires_at=timestamp(hold.expires_at),
        transfer_id=hold.transfer_id,
    )
