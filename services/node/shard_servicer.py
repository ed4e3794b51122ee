"""ShardService: the credits other shards' relays deliver to the shards this node leads."""

from __future__ import annotations

from datetime import datetime

import grpc

from bank.v1 import shard_pb2, shard_pb2_grpc
from services.common.errors import BankError
from services.common.identifiers import parse_account_number, parse_transfer_id
from services.common.model import PENDING, TRANSFER, Transfer
from services.common.money import validate_amount_minor, validate_currency
from services.common.validation import validate_request_id
from services.ledger.cross_shard import CreditCheck, CreditOutcome
from services.node.shards import ShardDirectory, ShardHandlers
from services.rpc.status import rpc_method


class ShardServicer(shard_pb2_grpc.ShardServiceServicer):
    def __init__(self, shards: ShardDirectory) -> None:
        self.shards = shards

    @rpc_method
    def ApplyCredit(
        self, request: shard_pb2.ApplyCreditRequest, context: grpc.ServicerContext
    ) -> shard_pb2.ApplyCreditResponse:
        handlers, transfer = self._credit(request)
        return _answer(handlers.ledger.cross_shard.apply_credit(transfer))

    @rpc_method
    def ApplyCredits(
        self, request: shard_pb2.ApplyCreditsRequest, context: grpc.ServicerContext
    ) -> shard_pb2.ApplyCreditsResponse:
        """Each credit checked alone (one that is malformed is answered UNSPECIFIED, to be
        delivered again later); those of one shard booked in one transaction. A shard not led
        here refuses the whole call (the relay re-routes it)."""
        answers: dict[int, shard_pb2.ApplyCreditResponse] = {}
        by_shard: dict[int, tuple[ShardHandlers, list[tuple[int, Transfer]]]] = {}
        for index, credit in enumerate(request.credits):
            try:
                handlers, transfer = self._credit(credit)
            except BankError as err:
                if err.retryable:
                    raise
                answers[index] = shard_pb2.ApplyCreditResponse(reason=err.reason, message=err.message)
                continue
            by_shard.setdefault(handlers.shard, (handlers, []))[1].append((index, transfer))
        for handlers, items in by_shard.values():
            outcomes = handlers.ledger.cross_shard.apply_credits([t for _, t in items])
            answers.update({index: _answer(o) for (index, _), o in zip(items, outcomes, strict=True)})
        return shard_pb2.ApplyCreditsResponse(outcomes=[answers[i] for i in range(len(request.credits))])

    @rpc_method
    def CheckCredits(
        self, request: shard_pb2.CheckCreditsRequest, context: grpc.ServicerContext
    ) -> shard_pb2.CheckCreditsResponse:
        """Would the shards led here take these credits now? Reads only; a malformed credit is
        answered with its refusal, a shard not led here refuses the whole call (re-routed)."""
        refusals: dict[int, BankError] = {}
        by_shard: dict[int, tuple[ShardHandlers, list[tuple[int, CreditCheck]]]] = {}
        for index, item in enumerate(request.credits):
            try:
                validate_currency(item.currency)
                validate_amount_minor(item.amount)
                handlers = self.shards.for_account(item.to_account, "to_account")
            except BankError as err:
                if err.retryable:
                    raise
                refusals[index] = err
                continue
            credit = CreditCheck(item.to_account, item.currency, item.amount)
            by_shard.setdefault(handlers.shard, (handlers, []))[1].append((index, credit))
        for handlers, items in by_shard.values():
            found = handlers.ledger.cross_shard.check_credits([c for _, c in items])
            refusals.update({index: r for (index, _), r in zip(items, found, strict=True) if r is not None})
        return shard_pb2.CheckCreditsResponse(
            refusals=[_refusal(refusals.get(index)) for index in range(len(request.credits))]
        )

    def _credit(self, request: shard_pb2.ApplyCreditRequest) -> tuple[ShardHandlers, Transfer]:
        parse_transfer_id(request.transfer_id)
        validate_request_id(request.request_id)
        parse_account_number(request.from_account, "from_account")
        validate_amount_minor(request.amount)
        validate_currency(request.currency)
        # The debited account may live on this very shard by now (a slot moved after the debit):
        # the credit is booked all the same, against this shard's transit account.
        handlers = self.shards.for_account(request.to_account, "to_account")
        transfer = Transfer(
            transfer_id=request.transfer_id, request_id=request.request_id, kind=TRANSFER,
            from_account=request.from_account, to_account=request.to_account, amount=request.amount,
            currency=request.currency, status=PENDING, reference=request.reference, failure_reason="",
            hold_id="", created_at=datetime.min,
        )  # fmt: skip
        return handlers, transfer


def _refusal(error: BankError | None) -> shard_pb2.CreditRefusal:
    if error is None:
        return shard_pb2.CreditRefusal()
    return shard_pb2.CreditRefusal(reason=error.reason, message=error.message)


def _answer(outcome: CreditOutcome) -> shard_pb2.ApplyCreditResponse:
    if outcome.later:  # not booked now: the relay delivers it again later (re-routed by slot)
        return shard_pb2.ApplyCreditResponse(reason=outcome.reason, message=outcome.message)
    applied = shard_pb2.CREDIT_OUTCOME_APPLIED if outcome.applied else shard_pb2.CREDIT_OUTCOME_REJECTED
    return shard_pb2.ApplyCreditResponse(outcome=applied, reason=outcome.reason, message=outcome.message)
