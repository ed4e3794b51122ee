"""The AccountService over gRPC: unpacks requests, calls the handler, packs answers."""

from __future__ import annotations

from typing import Protocol

import grpc

from bank.v1 import account_pb2, account_pb2_grpc
from services.account.handler import AccountHandler
from services.rpc.convert import account_to_proto
from services.rpc.status import rpc_method


class AccountShard(Protocol):
    """A shard served here, as this servicer needs it."""

    @property
    def accounts(self) -> AccountHandler: ...


class AccountShards(Protocol):
    """Where a request belongs (the node's shard directory): the shard of an account or of a
    customer's new account, when this node leads it; otherwise a retry-able refusal."""

    def for_account(self, number: str, field: str = "account_number") -> AccountShard: ...

    def for_customer(self, customer_id: str) -> AccountShard: ...


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, shards: AccountShards) -> None:
        self.shards = shards

    @rpc_method
    def OpenAccount(
        self, request: account_pb2.OpenAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.OpenAccountResponse:
        account = self.shards.for_customer(request.customer_id).accounts.open_account(
            request.request_id, request.customer_id, request.currency, request.overdraft_limit
        )
        return account_pb2.OpenAccountResponse(account=account_to_proto(account))

    @rpc_method
    def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.GetAccountResponse:
        account = self.shards.for_account(request.account_number).accounts.get_account(request.account_number)
        return account_pb2.GetAccountResponse(account=account_to_proto(account))

    @rpc_method
    def FreezeAccount(
        self, request: account_pb2.FreezeAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.FreezeAccountResponse:
        account = self.shards.for_account(request.account_number).accounts.freeze_account(
            request.request_id, request.account_number, request.reason
        )
        return account_pb2.FreezeAccountResponse(account=account_to_proto(account))

    @rpc_method
    def UnfreezeAccount(
        self, request: account_pb2.UnfreezeAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.UnfreezeAccountResponse:
        account = self.shards.for_account(request.account_number).accounts.unfreeze_account(
            request.request_id, request.account_number
        )
        return account_pb2.UnfreezeAccountResponse(account=account_to_proto(account))

    @rpc_method
    def CloseAccount(
        self, request: account_pb2.CloseAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.CloseAccountResponse:
        account = self.shards.for_account(request.account_number).accounts.close_account(
            request.request_id, request.account_number
        )
        return account_pb2.CloseAccountResponse(account=account_to_proto(account))
