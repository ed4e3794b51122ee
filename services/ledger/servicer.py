"""The LedgerService over gRPC: unpacks requests, calls the handler, packs answers."""

from __future__ import annotations

import grpc

from bank.v1 import ledger_pb2, ledger_pb2_grpc
from services.ledger.handler import LedgerHandler
from services.rpc.convert import (
    amount_of,
    hold_to_proto,
    posting_to_proto,
    transfer_status,
    transfer_to_proto,
)
from services.rpc.status import rpc_method


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, handler: LedgerHandler) -> None:
        self.handler = handler

    @rpc_method
    def Deposit(
        self, request: ledger_pb2.DepositRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.DepositResponse:
        moved = self.handler.deposit(
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
        moved = self.handler.withdraw(
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
        moved = self.handler.transfer(
            request.request_id,
            request.from_account,
            request.to_account,
            amount_of(request),
            request.currency,
            request.reference,
        )
        return ledger_pb2.TransferResponse(
            transfer_id=moved.transfer.transfer_id,
            status=transfer_status(moved.transfer.status),
            transfer=transfer_to_proto(moved.transfer),
        )

    @rpc_method
    def GetTransfer(
        self, request: ledger_pb2.GetTransferRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.GetTransferResponse:
        transfer = self.handler.get_transfer(request.transfer_id)
        return ledger_pb2.GetTransferResponse(transfer=transfer_to_proto(transfer))

    @rpc_method
    def ListPostings(
        self, request: ledger_pb2.ListPostingsRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.ListPostingsResponse:
        postings, next_token = self.handler.list_postings(
            request.account_number, request.page_token, request.page_size
        )
        return ledger_pb2.ListPostingsResponse(
            postings=[posting_to_proto(p) for p in postings], next_page_token=next_token
        )

    @rpc_method
    def CreateHold(
        self, request: ledger_pb2.CreateHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.CreateHoldResponse:
        hold = self.handler.create_hold(
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
        captured = self.handler.capture_hold(request.request_id, request.hold_id, request.amount)
        return ledger_pb2.CaptureHoldResponse(
            hold=hold_to_proto(captured.hold), transfer=transfer_to_proto(captured.transfer)
        )

    @rpc_method
    def VoidHold(
        self, request: ledger_pb2.VoidHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.VoidHoldResponse:
        hold = self.handler.void_hold(request.request_id, request.hold_id)
        return ledger_pb2.VoidHoldResponse(hold=hold_to_proto(hold))

    @rpc_method
    def GetHold(
        self, request: ledger_pb2.GetHoldRequest, context: grpc.ServicerContext
    ) -> ledger_pb2.GetHoldResponse:
        return ledger_pb2.GetHoldResponse(hold=hold_to_proto(self.handler.get_hold(request.hold_id)))
