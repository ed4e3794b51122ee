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
from concurrent.futures import ThreadPoolExecutor

import grpc

from bank.v1 import shard_pb2
from services.common.errors import BankError
from services.common.identifiers import slot_of_account
from services.ledger.cross_shard import CrossShardLedger
from services.node.peers import ShardPeers
from services.node.shards import ShardDirectory, ShardHandlers
from services.storage.ledger_tx import Delivery

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 3.0


class OutboxRelay:
    def __init__(
        self,
        shards: ShardDirectory,
        peers: ShardPeers,
        idle_s: float = 0.5,
        batch: int = 256,
        workers: int = 8,
    ) -> None:
        self.shards = shards
        self.peers = peers
        self.routing = peers.routing
        self.idle_s = idle_s
        self.batch = batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay")
        self._lock = threading.Lock()
        self._rounds: set[int] = set()  # the stores (by id) whose round is under way
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, shard: int | None = None) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        # A round may be stuck on a database that no longer answers: do not wait for it.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        """Starts a round for every shard led here whose last round is over. Rounds of different
        shards do not wait for each other: one stuck on a database (a COMMIT waiting for a
        standby on a member that was primary when the round began, until it is rewound) held
        up every shard's credits for two minutes in a fault run when they shared one loop."""
        while not self._stopping.is_set():
            self._wake.wait(self.idle_s)
            self._wake.clear()
            for handlers in list(self.shards.local.values()):
                if self._stopping.is_set():
                    return
                key = id(handlers.store)
                with self._lock:
                    if key in self._rounds:
                        continue
                    self._rounds.add(key)
                try:
                    self._pool.submit(self._round, handlers, key)
                except RuntimeError:  # the pool is shut down: the relay is stopping
                    return

    def _round(self, handlers: ShardHandlers, key: int) -> None:
        try:
            due = handlers.ledger.cross_shard.due_deliveries(self.batch)
            by_target: dict[int, list[Delivery]] = {}
            for delivery in due:
                # By the target's slot as the routing table has it now (the slot may have moved
                # since the debit), not by the shard the outbox row was written for.
                target = self.routing.shard_of_slot(slot_of_account(delivery.to_account))
                by_target.setdefault(target, []).append(delivery)
            for target, group in by_target.items():
                if self._stopping.is_set():
                    return
                self._deliver(handlers, target, group)
            if due:
                self._wake.set()  # more may have come meanwhile (its wake-up found this round busy)
        except BankError as err:
            log.warning("event=relay_read_failed shard=%s error=%r", handlers.shard, err.message)
        except Exception:  # a bug must not stop this shard's deliveries for good
            log.exception("event=relay_round_failed shard=%s", handlers.shard)
        finally:
            with self._lock:
                self._rounds.discard(key)

    def _deliver(self, handlers: ShardHandlers, target: int, deliveries: list[Delivery]) -> None:
        """Delivers credits owed to one shard in one call; finishes the applied ones together."""
        ledger = handlers.ledger.cross_shard
        try:
            answers = self._send(target, deliveries)
        except (grpc.RpcError, BankError) as err:
            error = f"{err.code().name}: {err.details()}" if isinstance(err, grpc.RpcError) else err.message
            if isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE:
                self.routing.refresh(from_truth=True)
            for delivery in deliveries:
                self._postpone(ledger, delivery, error)
            return
        applied = [d.transfer_id for d, a in zip(deliveries, answers, strict=True)
                   if a.outcome == shard_pb2.CREDIT_OUTCOME_APPLIED]  # fmt: skip
        try:
            ledger.delivered_all(applied)
        except BankError as err:  # the outcome is kept by the target; the next round finishes it
            log.warning("event=relay_finish_failed transfers=%s error=%r", len(applied), err.message)
        for delivery, answer in zip(deliveries, answers, strict=True):
            tid = delivery.transfer_id
            if answer.outcome == shard_pb2.CREDIT_OUTCOME_REJECTED:
                try:
                    ledger.refund(tid, f"{answer.reason}: {answer.message}")
                    log.info("event=transfer_refunded transfer_id=%s reason=%s", tid, answer.reason)
                except BankError as err:
                    log.warning("event=relay_finish_failed transfer_id=%s error=%r", tid, err.message)
            elif answer.outcome != shard_pb2.CREDIT_OUTCOME_APPLIED:  # not booked now: later
                self._postpone(ledger, delivery, answer.message or "no outcome")

    @staticmethod
    def _postpone(ledger: CrossShardLedger, delivery: Delivery, error: str) -> None:
        log.info("event=credit_postponed transfer_id=%s attempts=%s error=%r",
                 delivery.transfer_id, delivery.attempts + 1, error)  # fmt: skip
        try:
            ledger.postpone(delivery, error)
        except BankError as store_err:
            log.warning(
                "event=relay_postpone_failed transfer_id=%s error=%r", delivery.transfer_id, store_err.message
            )

    def _send(self, target: int, deliveries: list[Delivery]) -> list[shard_pb2.ApplyCreditResponse]:
        credits = [
            shard_pb2.ApplyCreditRequest(
                transfer_id=d.transfer_id, request_id=f"credit:{d.transfer_id}",
                from_account=d.from_account, to_account=d.to_account, amount=d.amount,
                currency=d.currency, source_shard=self.shards.shard_of_slot(slot_of_account(d.from_account)),
            )
            for d in deliveries
        ]  # fmt: skip
        request = shard_pb2.ApplyCreditsRequest(credits=credits)
        answer: shard_pb2.ApplyCreditsResponse = self.peers.call(
            target, "ApplyCredits", request, CALL_TIMEOUT_S
        )
        return list(answer.outcomes)
