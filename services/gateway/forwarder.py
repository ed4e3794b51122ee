"""Sends a request to the leader of its shard, wherever it is, re-routing and retrying
within the caller's deadline while the shard's route is stale or its leader unreachable."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from bank.v1 import account_pb2_grpc, ledger_pb2_grpc
from services.common.routes import RoutingTable, ShardRoute
from services.routing.client import RoutingClient
from services.rpc import metrics, tls
from services.rpc.auth import bearer
from services.rpc.status import REASON_KEY

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 10.0  # for callers that set none
DEADLINE_MARGIN_S = 0.05  # left to answer the caller before its own deadline
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
# While nothing changed, a held request tries again after 20, 40, 80, 100, 100... ms: a new
# route wakes it at once (see _wait_for_route), and the new leader's node starts serving some
# 100 ms after its route is written (it refuses NOT_LEADER until then).
MAX_BACKOFF_S = 0.1
# One attempt may not eat the whole deadline: a cut-off leader never answers, and only a new
# attempt (re-routed) can reach its successor. Retrying is safe: every write is idempotent.
ATTEMPT_TIMEOUT_S = 1.0
# While a shard has no reachable leader its requests wait here, each until its own deadline;
# beyond this many at once the gateway refuses more rather than pile them up.
MAX_HELD_PER_SHARD = 512
SLOT_MOVED = "SLOT_MOVED"
STUBS = {
    "bank.v1.AccountService": account_pb2_grpc.AccountServiceStub,
    "bank.v1.LedgerService": ledger_pb2_grpc.LedgerServiceStub,
}


class LeaderReplaced(Exception):
    """The node an attempt was for leads no shard any more (its channel was closed)."""

    retryable = True


def _reason(err: grpc.RpcError) -> str:
    return next((m.value for m in (err.trailing_metadata() or ()) if m.key == REASON_KEY), "")


class SubCallFailed(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class SubCall:
    """A caller's context as the forwarder sees it for a call made on behalf of others (one
    shard's part of a batch, or transfers sent together): a deadline, and a failure raised (to
    be answered per transfer) instead of ending a gRPC call."""

    def __init__(self, time_remaining: Callable[[], float | None]) -> None:
        self.time_remaining = time_remaining
        self.reason = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise SubCallFailed(code, details)

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.reason = dict(metadata).get(REASON_KEY, "")


class Forwarder:
    def __init__(
        self,
        routing: RoutingClient,
        dc: str = "",
        peer_token: str = "",
        root_certificates: bytes | None = None,
    ) -> None:
        self.routing = routing
        self.root_certificates = root_certificates
        self.dc = dc
        # The gateway speaks to bank-nodes as a peer; the caller's own token never goes further.
        self.metadata: tuple[tuple[str, str], ...] = bearer(peer_token) if peer_token else ()
        self._stubs: dict[tuple[str, str], Any] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}
        # Requests waiting for a new route wake up as soon as the routing table changes.
        self._table_changed = threading.Condition()
        routing.on_change(self._wake_waiters)

    def call(
        self, service: str, method: str, shard: int, request: Any, context: grpc.ServicerContext,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S, slot: int | None = None,
    ) -> Any:  # fmt: skip
        """Sends `request` to `shard`'s leader; with `slot`, to whichever shard owns that slot at
        each attempt (a slot that moves meanwhile is followed to its new shard)."""
        held = [False]  # set once this request counts as waiting for the shard's leader
        try:
            return self._call(service, method, shard, request, context, held, attempt_timeout_s, slot)
        finally:
            if held[0]:
                with self._lock:
                    self._held[shard] -= 1
                    metrics.GATEWAY_HELD.labels(shard=str(shard)).set(self._held[shard])

    def _hold(self, shard: int) -> bool:
        """Counts a request as waiting for the shard's leader; False when the shard is full."""
        with self._lock:
            if self._held.get(shard, 0) >= MAX_HELD_PER_SHARD:
                return False
            self._held[shard] = self._held.get(shard, 0) + 1
            metrics.GATEWAY_HELD.labels(shard=str(shard)).set(self._held[shard])
            return True

    def _call(
        self,
        service: str,
        method: str,
        shard: int,
        request: Any,
        context: grpc.ServicerContext,
        held: list[bool],
        attempt_timeout_s: float,
        slot: int | None = None,
    ) -> Any:
        remaining = context.time_remaining()
        budget = DEFAULT_DEADLINE_S if remaining is None or remaining > 1e6 else remaining
        deadline = time.monotonic() + budget - DEADLINE_MARGIN_S
        attempt, last_error = 0, "no attempt"
        tried: ShardRoute | None = None
        while True:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE if attempt else grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"shard {shard}: no leader answered within the deadline"
                    f" ({attempt} tries; last: {last_error})",
                )
            try:
                if slot is not None and attempt:
                    shard = self.routing.shard_of_slot(slot)
                route = tried = self.routing.route(shard)
                delay_s = self.routing.link_delay_s(self.dc, route.leader_dc)
                if delay_s:
                    time.sleep(min(delay_s, max(0.0, deadline - time.monotonic())))
                    timeout = deadline - time.monotonic()
                stub = self._stub(service, route.endpoint)
                started = time.perf_counter()
                try:
                    answer = getattr(stub, method)(
                        request,
                        timeout=min(timeout, attempt_timeout_s),
                        metadata=(("bank-shard-epoch", str(route.epoch)), *self.metadata),
                    )
                except ValueError as err:  # its channel closed meanwhile: the node leads no shard now
                    raise LeaderReplaced(f"{route.endpoint} leads no shard any more") from err
                except grpc.RpcError as err:
                    metrics.observe_client_call(
                        service, method, err.code().name, time.perf_counter() - started
                    )
                    raise
                metrics.observe_client_call(service, method, "OK", time.perf_counter() - started)
                return answer
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline - time.monotonic() > 0.1:
                    code = grpc.StatusCode.UNAVAILABLE  # only this attempt timed out: re-route
                if code == grpc.StatusCode.CANCELLED:
                    code = grpc.StatusCode.UNAVAILABLE  # ended by _drop_former_leaders: re-route
                if code not in RETRYABLE or (isinstance(context, SubCall) and _reason(err) == SLOT_MOVED):
                    # A part of a batch whose slot moved goes back to its caller at once, to be
                    # re-split by slot: sent again to the same shard, it would be refused again.
                    metadata = err.trailing_metadata()
                    if metadata:
                        context.set_trailing_metadata(tuple((m.key, m.value) for m in metadata))
                    context.abort(code, err.details() or code.name)
                last_error = f"{code.name}: {err.details()}"
                metrics.GATEWAY_RETRIES.labels(shard=str(shard), code=code.name).inc()
            except Exception as err:  # no route yet (the table is loading): as retry-able
                if not getattr(err, "retryable", False):
                    raise
                last_error = str(err)
            attempt += 1
            if attempt == 1:
                held[0] = self._hold(shard)
            if not held[0]:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"shard {shard}: {MAX_HELD_PER_SHARD} requests already wait for its leader; retry later",
                )
            # A refused or silent leader means the route may have moved: ask the truth at once,
            # and go straight to a new leader; only while nothing changed, back off a little.
            self.routing.refresh(from_truth=True)
            log.info(
                "event=rerouted shard=%s method=%s attempt=%s error=%r", shard, method, attempt, last_error
            )
            if not self._route_changed(shard, tried, slot):
                self._wait_for_route(min(0.02 * 2**attempt, MAX_BACKOFF_S, deadline - time.monotonic()))

    def _wake_waiters(self, table: RoutingTable) -> None:
        self._drop_former_leaders(table)
        with self._table_changed:
            self._table_changed.notify_all()

    def _drop_former_leaders(self, table: RoutingTable) -> None:
        """Closes the channels of nodes that lead no shard in `table`: the attempts still
        waiting on one end at once (CANCELLED) and go to the new leaders. A cut-off leader never
        answers; without this, a request sent to it just before its route changed waited the
        whole ATTEMPT_TIMEOUT_S (0.8-1 s more before a shard's first write, in a drill that cut
        off a DC leading every shard)."""
        if not table.routes:
            return
        leading = {route.endpoint for route in table.routes.values()}
        with self._lock:
            former = [endpoint for endpoint in self._channels if endpoint not in leading]
            channels = [self._channels.pop(endpoint) for endpoint in former]
            self._stubs = {key: stub for key, stub in self._stubs.items() if key[1] not in former}
        for channel in channels:
            channel.close()

    def _wait_for_route(self, at_most_s: float) -> None:
        """Backs off, but only until the routing table changes (a watch or Redis announces it)."""
        if at_most_s > 0:
            with self._table_changed:
                self._table_changed.wait(timeout=at_most_s)

    def _route_changed(self, shard: int, tried: ShardRoute | None, slot: int | None) -> bool:
        """Whether the next attempt goes somewhere else than the last one did."""
        try:
            if slot is not None:
                shard = self.routing.shard_of_slot(slot)
            now = self.routing.route(shard)
        except Exception:  # no route yet: nothing new to go to
            return False
        return tried is not None and (now.shard, now.epoch, now.endpoint) != (
            tried.shard,
            tried.epoch,
            tried.endpoint,
        )

    def _stub(self, service: str, endpoint: str) -> Any:
        key = (service, endpoint)
        with self._lock:
            stub = self._stubs.get(key)
            if stub is None:
                channel = self._channels.get(endpoint)
                if channel is None:
                    channel = tls.channel(endpoint, self.root_certificates)
                    self._channels[endpoint] = channel
                stub = STUBS[service](channel)
                self._stubs[key] = stub
            return stub

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
