"""Concurrent single `Transfer` calls to one shard travel to its leader together.

One gRPC call per transfer from gateway to leader cost more CPU on these cores (both ends of
the call, in Python) than booking the transfer. So transfers that arrive while earlier ones are
on their way wait in a queue per shard, and a sender takes up to `max_batch` of them to the
leader as one `CreateTransfers` call, which the leader books as one set. Each caller gets its
own transfer's answer, exactly what a call of its own would have got. Nothing waits for company:
a lone transfer leaves at once, as a batch of one.

Deadlines: each caller waits until its own. One still queued then is taken out and answered
DEADLINE_EXCEEDED (it was never sent); one already sent is answered UNAVAILABLE (its outcome is
not known here; a retry under the same request id learns it). The forwarder re-routes and
retries a batch, as any call, until the latest deadline among its transfers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import grpc

from bank.v1 import ledger_pb2
from services.gateway.forwarder import DEFAULT_DEADLINE_S, Forwarder, SubCall, SubCallFailed

log = logging.getLogger(__name__)
LEDGER = "bank.v1.LedgerService"


@dataclass(eq=False)
class Waiting:
    request: Any
    deadline: float  # time.monotonic()
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None  # its TransferResult


@dataclass(eq=False)
class Lane:
    """The queue of one shard and its senders."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    queue: deque[Waiting] = field(default_factory=deque)
    senders: list[threading.Thread] = field(default_factory=list)


class TransferCoalescer:
    def __init__(self, forwarder: Forwarder, senders_per_shard: int = 1, max_batch: int = 256) -> None:
        self.forwarder = forwarder
        # One batch in flight per shard and gateway (a leader books one set at a time anyway):
        # 64 callers on one gateway, 851 transfers/s with one sender, 731/s with two, whose
        # smaller batches cost the node and PostgreSQL more per transfer (/tmp profile runs).
        self.senders_per_shard = senders_per_shard
        self.max_batch = max_batch
        self._lanes: dict[int, Lane] = {}
        self._lock = threading.Lock()
        self._closed = False

    def transfer(self, shard: int, request: Any, context: grpc.ServicerContext) -> Any:
        """The TransferResult of `request`, sent to `shard`'s leader with whatever else is going."""
        remaining = context.time_remaining()
        budget = DEFAULT_DEADLINE_S if remaining is None or remaining > 1e6 else remaining
        waiting = Waiting(request, time.monotonic() + budget)
        lane = self._lane(shard)
        with lane.cond:
            lane.queue.append(waiting)
            lane.cond.notify()
        if waiting.done.wait(max(0.0, waiting.deadline - time.monotonic())):
            return waiting.result
        with lane.cond:
            queued = waiting in lane.queue
            if queued:
                lane.queue.remove(waiting)
        if queued:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"shard {shard}: the transfer waited for its turn past the deadline; it was not sent",
            )
        context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"shard {shard}: no answer from its leader within the deadline;"
            " retry with the same request_id to learn the outcome",
        )

    def close(self) -> None:
        self._closed = True
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with lane.cond:
                lane.cond.notify_all()

    def _lane(self, shard: int) -> Lane:
        lane = self._lanes.get(shard)
        if lane is not None:
            return lane
        with self._lock:
            lane = self._lanes.get(shard)
            if lane is None:
                lane = Lane()
                for number in range(self.senders_per_shard):
                    name = f"coalesce-{shard}-{number}"
                    sender = threading.Thread(target=self._send_loop, args=(shard, lane), name=name)
                    sender.daemon = True
                    lane.senders.append(sender)
                    sender.start()
                self._lanes[shard] = lane
            return lane

    def _send_loop(self, shard: int, lane: Lane) -> None:
        while True:
            with lane.cond:
                while not lane.queue and not self._closed:
                    lane.cond.wait()
                if self._closed:
                    return
                batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), self.max_batch))]
            self._send(shard, batch)

    def _send(self, shard: int, batch: list[Waiting]) -> None:
        latest = max(w.deadline for w in batch)
        sub = SubCall(lambda: latest - time.monotonic())
        part = ledger_pb2.CreateTransfersRequest(transfers=[w.request for w in batch], full_transfers=True)
        try:
            answer = self.forwarder.call(LEDGER, "CreateTransfers", shard, part, sub)
            results = list(answer.results)
        except SubCallFailed as failed:
            results = [
                ledger_pb2.TransferResult(code=failed.code.name, reason=sub.reason, message=failed.details)
            ] * len(batch)
        except Exception:  # a bug must not leave callers waiting until their deadlines
            log.exception("event=coalesced_send_failed shard=%s transfers=%s", shard, len(batch))
            broken = ledger_pb2.TransferResult(code="INTERNAL", message="internal error; see the gateway log")
            results = [broken] * len(batch)
        for waiting, result in zip(batch, results, strict=True):
            waiting.result = result
            waiting.done.set()
