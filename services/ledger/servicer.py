"""The LedgerService over gRPC: unpacks requests, calls the handler, packs answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from bank.v1 import ledger_pb2, ledger_pb2_grpc
from bankclient.coalescing import Closed, Coalescer, NoAnswer, NotSent
from services.common.errors import BankError, Unavailable
from services.common.model import MoneyMovement
from services.common.validation import validate_batch_size
from services.ledger.cross_shard import CreditCheck
from services.ledger.handler import LedgerHandler, OutgoingTransfer
from services.rpc.convert import (
    amount_of,
    hold_to_proto,
    posting_to_proto,
    transfer_result,
    transfer_status,
    transfer_to_proto,
)
from services.rpc.status import rpc_method

# Single Transfer calls to one shard that arrive while its last set is being booked are booked
# together as the next set, as a gateway's coalescer sends them (clients that route themselves
# reach the node one RPC per transfer). A lone transfer is booked at once, as a set of one.
SINGLES_MAX_SET = 256
SINGLES_DEFAULT_DEADLINE_S = 10.0


class LedgerShard(Protocol):
    """A shard served here, as this servicer needs it."""

    @property
    def shard(self) -> int: ...

    @property
    def ledger(self) -> LedgerHandler: ...


class LedgerShards(Protocol):
    """Where a request belongs (the node's shard directory): the shard led here that an
    account, transfer or hold belongs to; otherwise a retry-able refusal."""

    def for_account(self, number: str, field: str = "account_number") -> LedgerShard: ...

    def for_pair(
        self, source: str, target: str, source_field: str, target_field: str
    ) -> tuple[LedgerShard, int]: ...

    def for_same_shard_pair(
        self, source: str, target: str, source_field: str, target_field: str
    ) -> LedgerShard: ...

    def for_transfer_id(self, transfer_id: str) -> LedgerShard: ...

    def for_hold_id(self, hold_id: str) -> LedgerShard: ...


@dataclass
class _ShardPart:
    """The transfers of a batch that one shard debits: their units, and the outgoing ones."""

    handlers: LedgerShard
    units: list[tuple[int, Callable[..., MoneyMovement]]] = field(default_factory=list)
    outgoing: list[tuple[int, OutgoingTransfer]] = field(default_factory=list)

    def drop_refused_targets(self) -> dict[int, BankError]:
        """Asks the target shards about the outgoing transfers; those refused leave the part."""
        refusals = self.handlers.ledger.refused_targets([transfer for _, transfer in self.outgoing])
        refused = {index: r for (index, _), r in zip(self.outgoing, refusals, strict=True) if r is not None}
        self.units = [(index, unit) for index, unit in self.units if index not in refused]
        return refused


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, shards: LedgerShards, on_outbox: Callable[[int], None] = lambda shard: None) -> None:
        self.shards = shards
        # Wakes the relay of a shard as soon as a cross-shard debit is booked.
        self.on_outbox = on_outbox
        self._singles = Coalescer(self._book_singles, SINGLES_MAX_SET, 1, "node-transfers")
        self._counting = threading.Lock()
        self.single_sets = 0  # sets of single transfers booked
        self.singles = 0  # single transfers in them

    def close(self) -> None:
        """Answers the single transfers still waiting for their set (UNAVAILABLE: not booked)."""
        self._singles.close()

    @rpc_method
    def Deposit(
        self, request: ledger_pb2.DepositRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.DepositResponse:
        moved = self.shards.for_account(request.account_number).ledger.deposit(
            request.request_id,
            request.account_number,
            amount_of(request),
            request.currency,
            request.reference,
        )
        return ledger_pb2.DepositResponse(
            transfer=transfer_to_proto(moved.transfer), balance_after=moved.balance_after
        )

    @rpc_method
    def Withdraw(
        self, request: ledger_pb2.WithdrawRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.WithdrawResponse:
        moved = self.shards.for_account(request.account_number).ledger.withdraw(
            request.request_id,
            request.account_number,
            amount_of(request),
            request.currency,
            request.reference,
        )
        return ledger_pb2.WithdrawResponse(
            transfer=transfer_to_proto(moved.transfer), balance_after=moved.balance_after
        )

    @rpc_method
    def Transfer(
        self, request: ledger_pb2.TransferRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.TransferResponse:
        """Booked with the other single transfers that arrive meanwhile, as one set; the route
        (leader, epoch, slot) is checked here, on the caller's own call."""
        handlers, _ = self.shards.for_pair(
            request.from_account, request.to_account, "from_account", "to_account"
        )
        remaining = context.time_remaining()
        budget = SINGLES_DEFAULT_DEADLINE_S if remaining is None or remaining > 1e6 else remaining
        try:
            outcome = self._singles.submit(handlers.shard, request, time.monotonic() + budget)
        except NotSent:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the transfer waited past its deadline; it was not booked"
            )
        except Closed as closed:
            raise Unavailable("the node is stopping; the transfer was not booked; retry") from closed
        except NoAnswer as late:
            raise Unavailable(
                "the transfer's set was not booked within its deadline; retry with the same request_id"
                " to learn the outcome"
            ) from late
        if isinstance(outcome, BaseException):
            raise outcome
        return ledger_pb2.TransferResponse(
            transfer_id=outcome.transfer.transfer_id,
            status=transfer_status(outcome.transfer.status),
            transfer=transfer_to_proto(outcome.transfer),
        )

    def _book_singles(self, shard: int, requests: list[Any], latest: float) -> list[Any]:
        """A set of single transfers: each its own outcome (movement or refusal), even when none
        of them may be booked here (each was routed here on its own)."""
        with self._counting:
            self.single_sets, self.singles = self.single_sets + 1, self.singles + len(requests)
        return self._book_set(requests, refuse_whole=False)

    @rpc_method
    def CreateTransfers(
        self, request: ledger_pb2.CreateTransfersRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.CreateTransfersResponse:
        """A batch: each transfer checked and answered alone (a cross-shard one's target asked
        about first, one question per target shard); a shard's part booked in a few
        transactions. A shard not led here refuses the whole call (the gateway re-routes it)."""
        validate_batch_size(len(request.transfers))
        outcomes = self._book_set(request.transfers)
        return ledger_pb2.CreateTransfersResponse(
            results=[
                transfer_result(index, outcome, request.full_transfers)
                for index, outcome in enumerate(outcomes)
            ]
        )

    def _book_set(
        self, transfers: Sequence[ledger_pb2.TransferRequest], refuse_whole: bool = True
    ) -> list[MoneyMovement | BaseException]:
        """Each transfer's outcome: its movement, or its refusal (see CreateTransfers); when
        none of them may be booked here, the first one's refusal raised (`refuse_whole`)."""
        outcomes: dict[int, MoneyMovement | BaseException] = {}
        by_shard: dict[int, _ShardPart] = {}
        elsewhere: dict[int, BankError] = {}
        for index, item in enumerate(transfers):
            try:
                self._add_unit(by_shard, index, item)
            except BankError as err:
                (elsewhere if err.retryable else outcomes)[index] = err
        if elsewhere and not by_shard and refuse_whole:
            raise elsewhere[min(elsewhere)]  # nothing of it is led here (or fenced): all goes elsewhere
        # Some of it is led here: the rest (slots that moved away) is answered per transfer, and
        # the gateway sends those again to their slots' shards.
        outcomes.update(elsewhere)
        for part in by_shard.values():
            outcomes.update(part.drop_refused_targets())
        for shard, part in by_shard.items():
            results = part.handlers.ledger.run_batch([unit for _, unit in part.units])
            outcomes.update({index: result for (index, _), result in zip(part.units, results, strict=True)})
            if part.outgoing:
                self.on_outbox(shard)
        return [outcomes[index] for index in range(len(transfers))]

    def _add_unit(
        self, by_shard: dict[int, _ShardPart], index: int, item: ledger_pb2.TransferRequest
    ) -> None:
        """One transfer of a batch as a unit of its source shard's part (validated, not booked)."""
        handlers, target_shard = self.shards.for_pair(
            item.from_account, item.to_account, "from_account", "to_account"
        )
        amount = amount_of(item)
        args = (item.request_id, item.from_account, item.to_account)
        part = by_shard.get(handlers.shard) or by_shard.setdefault(handlers.shard, _ShardPart(handlers))
        if target_shard == handlers.shard:
            unit = handlers.ledger.transfer_unit(*args, amount, item.currency, item.reference)
        else:
            unit = handlers.ledger.transfer_out_unit(
                *args, target_shard, amount, item.currency, item.reference, checked=True
            )
            credit = CreditCheck(item.to_account, item.currency, amount)
            part.outgoing.append((index, OutgoingTransfer(item.request_id, target_shard, credit)))
        part.units.append((index, unit))

    @rpc_method
    def GetTransfer(
        self, request: ledger_pb2.GetTransferRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.GetTransferResponse:
        transfer = self.shards.for_transfer_id(request.transfer_id).ledger.get_transfer(request.transfer_id)
        return ledger_pb2.GetTransferResponse(transfer=transfer_to_proto(transfer))

    @rpc_method
    def ListPostings(
        self, request: ledger_pb2.ListPostingsRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ListPostingsResponse:
        postings, next_token = self.shards.for_account(request.account_number).ledger.list_postings(
            request.account_number, request.page_token, request.page_size
        )
        return ledger_pb2.ListPostingsResponse(
            postings=[posting_to_proto(p) for p in postings], next_page_token=next_token
        )

    @rpc_method
    def CreateHold(
        self, request: ledger_pb2.CreateHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.CreateHoldResponse:
        hold = self.shards.for_same_shard_pair(
            request.account_number, request.to_account, "account_number", "to_account"
        ).ledger.create_hold(
            request.request_id,
            request.account_number,
            request.to_account,
            amount_of(request),
            request.currency,
            request.timeout_seconds,
        )
        return ledger_pb2.CreateHoldResponse(hold=hold_to_proto(hold))

    @rpc_method
    def CaptureHold(
        self, request: ledger_pb2.CaptureHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.CaptureHoldResponse:
        captured = self.shards.for_hold_id(request.hold_id).ledger.capture_hold(
            request.request_id, request.hold_id, request.amount
        )
        return ledger_pb2.CaptureHoldResponse(
            hold=hold_to_proto(captured.hold), transfer=transfer_to_proto(captured.transfer)
        )

    @rpc_method
    def VoidHold(
        self, request: ledger_pb2.VoidHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.VoidHoldResponse:
        hold = self.shards.for_hold_id(request.hold_id).ledger.void_hold(request.request_id, request.hold_id)
        return ledger_pb2.VoidHoldResponse(hold=hold_to_proto(hold))

    @rpc_method
    def GetHold(
        self, request: ledger_pb2.GetHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.GetHoldResponse:
        hold = self.shards.for_hold_id(request.hold_id).ledger.get_hold(request.hold_id)
        return ledger_pb2.GetHoldResponse(hold=hold_to_proto(hold))
