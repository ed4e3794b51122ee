"""The source's side of a cross-shard transfer's target check: asks the target's shard (here,
when this node leads it too) whether it would take the credits now."""

from __future__ import annotations

import grpc

from bank.v1 import shard_pb2
from services.common.errors import BankError, Unavailable, error_from_reason
from services.ledger.cross_shard import CreditCheck
from services.node.peers import ShardPeers
from services.node.shards import ShardDirectory

# A check is one read on the target's primary; it must leave room in a gateway's attempt (1 s)
# for the debit that follows.
CHECK_TIMEOUT_S = 0.6


class TargetChecker:
    """A `TargetCheck` (see services.ledger.cross_shard) over the cluster's ShardService."""

    def __init__(self, shards: ShardDirectory, peers: ShardPeers) -> None:
        self.shards = shards
        self.peers = peers

    def __call__(self, target_shard: int, credits: list[CreditCheck]) -> list[BankError | None]:
        local = self.shards.local.get(target_shard)
        if local is not None and not self.shards.fenced:
            return local.ledger.cross_shard.check_credits(credits)
        request = shard_pb2.CheckCreditsRequest(
            credits=[
                shard_pb2.CheckCreditRequest(to_account=c.to_account, currency=c.currency, amount=c.amount)
                for c in credits
            ]
        )
        answer = self._ask(target_shard, request)
        if len(answer.refusals) != len(credits):
            raise Unavailable(f"to_account: shard {target_shard} answered the check of its accounts in part")
        return [error_from_reason(r.reason, r.message) if r.reason else None for r in answer.refusals]

    def _ask(
        self, target_shard: int, request: shard_pb2.CheckCreditsRequest
    ) -> shard_pb2.CheckCreditsResponse:
        """One try, and one more on a fresh route when the first found no leader there."""
        for attempt in (1, 2):
            try:
                answer: shard_pb2.CheckCreditsResponse = self.peers.call(
                    target_shard, "CheckCredits", request, CHECK_TIMEOUT_S
                )
                return answer
            except grpc.RpcError as err:
                if attempt == 1 and err.code() == grpc.StatusCode.UNAVAILABLE:
                    self.peers.routing.refresh(from_truth=True)
                    continue
                raise Unavailable(
                    f"to_account: shard {target_shard} could not check the account now"
                    f" ({err.code().name}: {err.details()}); retry"
                ) from None
        raise AssertionError("unreachable")
