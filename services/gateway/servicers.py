"""The public AccountService and LedgerService of a DC's gateway: each call is checked, given
its shard by the slot its account number, customer, transfer or hold id carries, and forwarded
to that shard's leader."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from bank.v1 import account_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from services.common.errors import BankError
from services.common.identifiers import (
    parse_account_number,
    parse_hold_id,
    parse_transfer_id,
    slot_of_customer,
)
from services.common.validation import validate_batch_size, validate_customer_id, validate_request_id
from services.gateway.coalescer import TransferCoalescer
from services.gateway.forwarder import Forwarder, SubCall, SubCallFailed
from services.rpc.convert import amount_of, transfer_result
from services.rpc.status import REASON_KEY, rpc_method

ACCOUNTS, LEDGER = "bank.v1.AccountService", "bank.v1.LedgerService"
BATCH_ATTEMPT_S = 3600.0  # bounded by the caller's deadline in practice
MOVING = ("SLOT_MOVING", "SLOT_MOVED")  # refusals of a transfer whose slot is on its way
# In a batch, a transfer of a slot that has moved from the shard of its part may also be told
# NOT_LEADER (its part went to the shard that held the slot); it is sent again all the same.
MOVING_IN_BATCH = (*MOVING, "NOT_LEADER")
SLOT_RETRY_S = 0.02


class Router:
    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def shard(self, slot: int) -> int:
        return self.forwarder.routing.shard_of_slot(slot)

    def send(self, service: str, method: str, slot: int, request: Any, context: grpc.ServicerContext) -> Any:
        return self.forwarder.call(service, method, self.shard(slot), request, context, slot=slot)


def _mutation(request: Any) -> None:
    """What every money-moving or state-changing request must carry, checked before a hop."""
    validate_request_id(request.request_id)
    if hasattr(request, "WhichOneof") and "amount_value" in request.DESCRIPTOR.oneofs_by_name:
        amount_of(request)


class GatewayAccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, router: Router) -> None:
        self.router = router

    @rpc_method
    def OpenAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        slot = slot_of_customer(validate_customer_id(request.customer_id))
        return self.router.send(ACCOUNTS, "OpenAccount", slot, request, context)

    @rpc_method
    def GetAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.router.send(
            ACCOUNTS, "GetAccount", parse_account_number(request.account_number), request, context
        )

    @rpc_method
    def FreezeAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._by_account("FreezeAccount", request, context)

    @rpc_method
    def UnfreezeAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._by_account("UnfreezeAccount", request, context)

    @rpc_method
    def CloseAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._by_account("CloseAccount", request, context)

    def _by_account(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        return self.router.send(
            ACCOUNTS, method, parse_account_number(request.account_number), request, context
        )


class GatewayLedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, router: Router, coalescer: TransferCoalescer | None = None) -> None:
        self.router = router
        # Single transfers to one shard travel to its leader together (see gateway/coalescer).
        self.coalescer = coalescer or TransferCoalescer(router.forwarder)

    @rpc_method
    def CreateTransfers(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Splits the batch by the source's shard, sends the parts to their leaders at once, and
        answers one result per transfer in the request's order."""
        validate_batch_size(len(request.transfers))
        results: dict[int, Any] = {}
        slots: dict[int, int] = {}
        for index, item in enumerate(request.transfers):
            try:
                _mutation(item)
                parse_account_number(item.to_account, "to_account")
                slots[index] = parse_account_number(item.from_account, "from_account")
            except BankError as err:
                results[index] = transfer_result(index, err)
        pending = sorted(slots)
        while pending:
            self._send_parts(request, context, results, self._parts(pending, slots), slots)
            # Transfers whose slot was moving are held and sent again, re-routed by slot, within
            # the caller's deadline (their request ids make a second sending safe).
            pending = [i for i in pending if results[i].reason in MOVING_IN_BATCH]
            if pending and (context.time_remaining() or 0) > SLOT_RETRY_S:
                self.router.forwarder.routing.refresh(from_truth=True)
                time.sleep(SLOT_RETRY_S)
            else:
                pending = []
        return ledger_pb2.CreateTransfersResponse(results=[results[i] for i in range(len(request.transfers))])

    def _parts(self, indexes: list[int], slots: dict[int, int]) -> dict[int, list[int]]:
        parts: dict[int, list[int]] = {}
        for index in indexes:
            parts.setdefault(self.router.shard(slots[index]), []).append(index)
        return parts

    def _send_parts(
        self,
        request: Any,
        context: grpc.ServicerContext,
        results: dict[int, Any],
        parts: dict[int, list[int]],
        slots: dict[int, int],
    ) -> None:
        """Each shard's part to its leader, all at once; every transfer's result into `results`."""

        def send(shard: int, indexes: list[int], first_slot: int) -> None:
            part = ledger_pb2.CreateTransfersRequest(
                transfers=[request.transfers[i] for i in indexes], full_transfers=request.full_transfers
            )
            sub = SubCall(context.time_remaining)
            # A part's attempt may take the rest of the caller's deadline: cutting it short and
            # sending the same part again would only make two copies wait on each other's locks.
            try:
                answer = self.router.forwarder.call(
                    LEDGER, "CreateTransfers", shard, part, sub, BATCH_ATTEMPT_S, slot=first_slot
                )
            except SubCallFailed as failed:
                for index in indexes:
                    results[index] = ledger_pb2.TransferResult(
                        index=index, code=failed.code.name, reason=sub.reason, message=failed.details
                    )
                return
            for index, result in zip(indexes, answer.results, strict=True):
                result.index = index
                results[index] = result

        with ThreadPoolExecutor(max_workers=min(len(parts), 16)) as pool:
            list(pool.map(lambda item: send(item[0], item[1], slots[item[1][0]]), parts.items()))

    @rpc_method
    def Deposit(self, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        return self.router.send(
            LEDGER, "Deposit", parse_account_number(request.account_number), request, context
        )

    @rpc_method
    def Withdraw(self, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        return self.router.send(
            LEDGER, "Withdraw", parse_account_number(request.account_number), request, context
        )

    @rpc_method
    def Transfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Goes to the source's shard; that shard relays the credit if the target lives elsewhere."""
        _mutation(request)
        parse_account_number(request.to_account, "to_account")
        slot = parse_account_number(request.from_account, "from_account")
        result = self.coalescer.transfer(self.router.shard(slot), request, context)
        while result.reason in MOVING_IN_BATCH and (context.time_remaining() or 0) > SLOT_RETRY_S:
            # The slot is moving (or moved): held here through the freeze, then sent on to
            # whichever shard owns it (a retry is safe: the request id makes it idempotent).
            self.router.forwarder.routing.refresh(from_truth=result.reason == "SLOT_MOVED")
            time.sleep(SLOT_RETRY_S)
            result = self.coalescer.transfer(self.router.shard(slot), request, context)
        if result.code != "OK":
            if result.reason:
                context.set_trailing_metadata(((REASON_KEY, result.reason),))
            context.abort(getattr(grpc.StatusCode, result.code, grpc.StatusCode.UNKNOWN), result.message)
        return ledger_pb2.TransferResponse(
            transfer_id=result.transfer_id, status=result.status, transfer=result.transfer
        )

    @rpc_method
    def GetTransfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.router.send(
            LEDGER, "GetTransfer", parse_transfer_id(request.transfer_id), request, context
        )

    @rpc_method
    def ListPostings(self, request: Any, context: grpc.ServicerContext) -> Any:
        slot = parse_account_number(request.account_number)
        return self.router.send(LEDGER, "ListPostings", slot, request, context)

    @rpc_method
    def CreateHold(self, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        parse_account_number(request.to_account, "to_account")
        slot = parse_account_number(request.account_number)
        return self.router.send(LEDGER, "CreateHold", slot, request, context)

    @rpc_method
    def CaptureHold(self, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        return self.router.send(LEDGER, "CaptureHold", parse_hold_id(request.hold_id), request, context)

    @rpc_method
    def VoidHold(self, request: Any, context: grpc.ServicerContext) -> Any:
        _mutation(request)
        return self.router.send(LEDGER, "VoidHold", parse_hold_id(request.hold_id), request, context)

    @rpc_method
    def GetHold(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.router.send(LEDGER, "GetHold", parse_hold_id(request.hold_id), request, context)
