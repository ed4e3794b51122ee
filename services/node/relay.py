"""The relay of a node: delivers the credits its shards owe to other shards, from the outbox.

It wakes when a cross-shard debit is booked and otherwise every `idle_s`; each round delivers
at most `batch` credits per shard, several at a time. A credit the target applies (now or
before) finishes the transfer; one it refuses for good is refunded; anything else (the target
is down, moving, or slow) is tried again later with a growing delay. After a restart the
outbox itself says what is still owed.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from bank.v1 import shard_pb2, shard_pb2_grpc
from services.common.errors import BankError
from services.node.shards import ShardDirectory, ShardHandlers
from services.routing.client import RoutingClient
from services.rpc import metrics, tls
from services.rpc.auth import bearer
from services.storage.ledger_store import Delivery

log = logging.getLogger(__name__)
SHARD_SERVICE = "bank.v1.ShardService"
CALL_TIMEOUT_S = 3.0


class OutboxRelay:
    def __init__(
        self,
        shards: ShardDirectory,
        routing: RoutingClient,
        dc: str = "",
        idle_s: float = 0.5,
        batch: int = 64,
        workers: int = 8,
        token: str = "",
        root_certificates: bytes | None = None,
    ) -> None:
        self.root_certificates = root_certificates
        self.shards = shards
        self.metadata: tuple[tuple[str, str], ...] = bearer(token) if token else ()
        self.dc = dc
        self.routing = routing
        self.idle_s = idle_s
        self.batch = batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay")
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, shard: int | None = None) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for channel in self._channels.values():
            channel.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.idle_s)
            self._wake.clear()
            for handlers in list(self.shards.local.values()):
                if self._stopping.is_set():
                    return
                try:
                    due = handlers.ledger.cross_shard.due_deliveries(self.batch)
                except BankError as err:
                    log.warning("event=relay_read_failed shard=%s error=%r", handlers.shard, err.message)
                    continue
                if due:
                    list(self._pool.map(lambda d, h=handlers: self._deliver(h, d), due))
                    if len(due) == self.batch:
                        self._wake.set()  # more is waiting

    def _deliver(self, handlers: ShardHandlers, delivery: Delivery) -> None:
        ledger = handlers.ledger.cross_shard
        try:
            answer = self._send(delivery)
        except (grpc.RpcError, BankError) as err:
            error = f"{err.code().name}: {err.details()}" if isinstance(err, grpc.RpcError) else err.message
            if isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE:
                self.routing.refresh(from_truth=True)
            log.info("event=credit_postponed transfer_id=%s attempts=%s error=%r",
                     delivery.transfer_id, delivery.attempts + 1, error)  # fmt: skip
            try:
                ledger.postpone(delivery, error)
            except BankError as store_err:
                log.warning(
                    "event=relay_postpone_failed transfer_id=%s error=%r",
                    delivery.transfer_id,
                    store_err.message,
                )
            return
        try:
            if answer.outcome == shard_pb2.CREDIT_OUTCOME_APPLIED:
                ledger.delivered(delivery.transfer_id)
            else:
                ledger.refund(delivery.transfer_id, f"{answer.reason}: {answer.message}")
                log.info(
                    "event=transfer_refunded transfer_id=%s reason=%s", delivery.transfer_id, answer.reason
                )
        except BankError as err:  # the outcome is kept by the target; the next round finishes it
            log.warning(
                "event=relay_finish_failed transfer_id=%s error=%r", delivery.transfer_id, err.message
            )

    def _send(self, delivery: Delivery) -> shard_pb2.ApplyCreditResponse:
        route = self.routing.route(delivery.target_shard)
        source_shard = self.shards.shard_of_slot(int(delivery.from_account[:4]))
        request = shard_pb2.ApplyCreditRequest(
            transfer_id=delivery.transfer_id, request_id=f"credit:{delivery.transfer_id}",
            from_account=delivery.from_account, to_account=delivery.to_account, amount=delivery.amount,
            currency=delivery.currency, source_shard=source_shard,
        )  # fmt: skip
        delay_s = self.routing.link_delay_s(self.dc, route.leader_dc)
        if delay_s:
            self._stopping.wait(delay_s)
        stub = shard_pb2_grpc.ShardServiceStub(self._channel(route.endpoint))
        started = time.perf_counter()
        try:
            answer: shard_pb2.ApplyCreditResponse = stub.ApplyCredit(
                request,
                timeout=CALL_TIMEOUT_S,
                metadata=(("bank-shard-epoch", str(route.epoch)), *self.metadata),
            )
        except grpc.RpcError as err:
            metrics.observe_client_call(
                SHARD_SERVICE, "ApplyCredit", err.code().name, time.perf_counter() - started
            )
            raise
        metrics.observe_client_call(SHARD_SERVICE, "ApplyCredit", "OK", time.perf_counter() - started)
        return answer

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = tls.channel(endpoint, self.root_certificates)
                self._channels[endpoint] = channel
            return channel
