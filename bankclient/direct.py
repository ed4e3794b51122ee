"""Direct routing: the client calls the leader node of a request's shard itself, as Redis
Cluster and Kafka clients call the owner of a key from a cached map.

The map is a gateway's routing table (`AdminService.GetTopology`, open to the client
credential): slot -> shard, shard -> leader endpoint and epoch. Every call carries its route's
epoch (`bank-shard-epoch`); a node that no longer leads the shard at that epoch, or no longer
owns the slot, refuses (UNAVAILABLE, reason NOT_LEADER or SLOT_MOVED) and nothing is written.
A refusal, an unreachable node or a slot on its way (SLOT_MOVING) sends that one request to the
gateways instead (they hold it through a failover or a move, within the caller's deadline) and
has the table read again; a node that could not be reached is left alone until the table names
another leader or SUSPECT_S passes. Sending again is safe: every mutating request carries its
request id.

Slots are read from the request as the bank's own identifiers module does (a unit test keeps
the two equal); anything that does not parse goes to a gateway, whose answer names the fault.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import grpc

from bank.v1 import account_pb2_grpc, ledger_pb2, ledger_pb2_grpc

NUM_SLOTS = 1024  # services/common/identifiers.py
EPOCH_KEY = "bank-shard-epoch"
REASON_KEY = "bank-error-reason"
# Answers that mean "not here, not now": the request goes to the gateways and the table is read again.
REDIRECT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
# A transfer of a batch refused for where it was sent, not for what it is (sent again by a gateway).
REDIRECT_REASONS = {"NOT_LEADER", "SLOT_MOVED", "SLOT_MOVING", "UNAVAILABLE"}
REFRESH_EVERY_S = 0.05  # at most this often the table is read again after refusals
SUSPECT_S = 2.0  # how long a node that could not be reached is passed over (unless re-routed)
# While a shard's leader is passed over, the table is read this often: its successor is used
# as soon as the gateways know of it.
SUSPECT_REFRESH_S = 0.2
PARALLEL_PARTS = 8  # a batch's parts for different shards on their way at once

_ACCOUNT_NUMBER = re.compile(r"[0-9]{16}")
_ROUTED_ID = re.compile(r"[TH](?P<slot>[0-9]{4})-[0-9a-f]{32}")
# method -> (the request field that routes it, how to read its slot)
_ACCOUNT, _CUSTOMER, _ID = "account", "customer", "id"
ROUTED_BY: dict[str, tuple[str, str]] = {
    "OpenAccount": ("customer_id", _CUSTOMER),
    **{m: ("account_number", _ACCOUNT) for m in ("GetAccount", "FreezeAccount", "UnfreezeAccount")},
    **{m: ("account_number", _ACCOUNT) for m in ("CloseAccount", "Deposit", "Withdraw", "ListPostings")},
    "CreateHold": ("account_number", _ACCOUNT),
    "Transfer": ("from_account", _ACCOUNT),
    "GetTransfer": ("transfer_id", _ID),
    **{m: ("hold_id", _ID) for m in ("CaptureHold", "VoidHold", "GetHold")},
}
STUBS = {"accounts": account_pb2_grpc.AccountServiceStub, "ledger": ledger_pb2_grpc.LedgerServiceStub}

# (request, seconds left) -> the gateways' answer to the same method
Fallback = Callable[[Any, float], Any]


def slot_of_account(number: str) -> int | None:
    """The slot an account number names, or None when it is not one (its check digit is the node's
    to check, as a gateway's)."""
    if not _ACCOUNT_NUMBER.fullmatch(number) or int(number[:4]) >= NUM_SLOTS:
        return None
    return int(number[:4])


def slot_of_customer(customer_id: str) -> int:
    return zlib.crc32(customer_id.encode("utf-8")) % NUM_SLOTS


def slot_of_id(text: str) -> int | None:
    """The slot a transfer id (T0123-...) or hold id (H0123-...) carries, or None."""
    found = _ROUTED_ID.fullmatch(text)
    if found is None or int(found["slot"]) >= NUM_SLOTS:
        return None
    return int(found["slot"])


def routed_slot(method: str, request: Any) -> int | None:
    """The slot that routes `request`, or None (not routable here: a gateway takes it)."""
    field, kind = ROUTED_BY.get(method, ("", ""))
    if not field:
        return None
    value = getattr(request, field)
    if kind == _CUSTOMER:
        return slot_of_customer(value) if value else None
    return slot_of_account(value) if kind == _ACCOUNT else slot_of_id(value)


class Leader(NamedTuple):
    shard: int
    endpoint: str
    epoch: int


class Routes(NamedTuple):
    version: int
    shard_by_slot: tuple[int, ...]
    leaders: dict[int, Leader]


def routes_of(topology: Any) -> Routes:
    """The table a GetTopology answer gives."""
    by_slot = [-1] * NUM_SLOTS
    for part in topology.slots:
        by_slot[part.first_slot : part.last_slot + 1] = [part.shard] * (part.last_slot - part.first_slot + 1)
    leaders = {r.shard: Leader(r.shard, r.endpoint, r.epoch) for r in topology.leaders if r.endpoint}
    return Routes(topology.routing_version, tuple(by_slot), leaders)


def _reason(err: grpc.RpcError) -> str:
    return next((m.value for m in (err.trailing_metadata() or ()) if m.key == REASON_KEY), "")


class DirectRouter:
    """`read_topology()` answers GetTopology (through the gateways); `open_channel(endpoint)` makes
    a channel to a node (its TLS, keepalive and interceptors the client's own)."""

    def __init__(
        self,
        read_topology: Callable[[], Any],
        open_channel: Callable[[str], grpc.Channel],
        metadata: tuple[tuple[str, str], ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_topology = read_topology
        self._open_channel = open_channel
        self._metadata = metadata
        self._clock = clock
        self._routes: Routes | None = None
        self._read_at = float("-inf")
        self._reading = threading.Lock()
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._suspects: dict[str, float] = {}  # endpoint -> until when it is passed over
        self._pool: ThreadPoolExecutor | None = None
        self.direct_calls = 0  # calls answered by a node (its refusals of a request included)
        self.redirected = 0  # calls a node refused or could not take, sent to the gateways

    # The table.

    def routes(self) -> Routes | None:
        """The table, read on first use; None while no gateway gives one."""
        if self._routes is None:
            self.refresh(None)
        return self._routes

    def refresh(self, seen: Routes | None, every_s: float = REFRESH_EVERY_S) -> None:
        """Reads the table again, unless someone did since `seen` was read or did less than
        `every_s` ago."""
        with self._reading:
            if self._routes is not seen or self._clock() - self._read_at < every_s:
                return
            self._read_at = self._clock()
            try:
                routes = routes_of(self._read_topology())
            except grpc.RpcError:
                return  # the gateways hold the requests meanwhile; read again at the next refusal
            if self._routes is not None and routes.version < self._routes.version:
                return
            self._routes = routes
            self._forgive(routes)

    def _forgive(self, routes: Routes) -> None:
        """A suspect node that the new table still names stays suspect; one it no longer names is
        dropped with its channel (the node may come back under the same address as a follower)."""
        leading = {leader.endpoint for leader in routes.leaders.values()}
        with self._lock:
            gone = [e for e in self._channels if e not in leading]
            for endpoint in gone:
                self._channels.pop(endpoint).close()
                self._suspects.pop(endpoint, None)
            self._stubs = {key: stub for key, stub in self._stubs.items() if key[1] not in gone}

    def leader(self, slot: int) -> tuple[Leader, Routes] | None:
        """The leader to send a request of `slot` to now, or None (the gateways take it)."""
        routes = self.routes()
        if routes is None:
            return None
        leader = routes.leaders.get(routes.shard_by_slot[slot])
        if leader is None:
            return None
        if self._suspects.get(leader.endpoint, float("-inf")) > self._clock():
            self.refresh(routes, SUSPECT_REFRESH_S)  # its successor, as soon as there is one
            return None
        return leader, routes

    def shard_of(self, slot: int | None) -> int | None:
        """The shard `slot` is routed to now (None: not routable, or no table yet)."""
        routes = self.routes() if slot is not None else None
        return routes.shard_by_slot[slot] if routes is not None and slot is not None else None

    # Calls.

    def call(self, service: str, method: str, request: Any, deadline: float, fallback: Fallback) -> Any:
        """`request` answered by its shard's leader, or by the gateways when that leader cannot."""
        if method == "CreateTransfers":
            return self._create_transfers(request, deadline, fallback)
        slot = routed_slot(method, request)
        target = self.leader(slot) if slot is not None else None
        if target is None:
            return fallback(request, deadline - self._clock())
        try:
            return self._send(service, method, request, deadline, *target)
        except grpc.RpcError as err:
            if err.code() not in REDIRECT_CODES or deadline - self._clock() <= 0:
                raise
            return fallback(request, deadline - self._clock())

    def _send(
        self, service: str, method: str, request: Any, deadline: float, leader: Leader, routes: Routes
    ) -> Any:
        metadata = ((EPOCH_KEY, str(leader.epoch)), *self._metadata)
        try:
            answer = getattr(self._stub(service, leader.endpoint), method)(
                request, timeout=max(0.001, deadline - self._clock()), metadata=metadata
            )
        except ValueError as err:  # its channel was closed meanwhile: the node leads nothing now
            raise _Closed(leader.endpoint) from err
        except grpc.RpcError as err:
            if err.code() in REDIRECT_CODES:
                self._redirected(err, leader, routes)
            else:
                self._answered()  # a refusal of the request itself is the node's answer
            raise
        self._answered()
        return answer

    def _answered(self) -> None:
        with self._lock:
            self.direct_calls += 1

    def _redirected(self, err: grpc.RpcError, leader: Leader, routes: Routes) -> None:
        """A node refused or could not be reached: pass over it for a while if it was not there,
        and read the table again unless the slot is only on its way (SLOT_MOVING)."""
        reason = _reason(err)
        with self._lock:
            self.redirected += 1
            if not reason and err.code() != grpc.StatusCode.CANCELLED:  # gone, cut off or stopped
                self._suspects[leader.endpoint] = self._clock() + SUSPECT_S
        if reason != "SLOT_MOVING":
            self.refresh(routes)

    def _create_transfers(self, request: Any, deadline: float, fallback: Fallback) -> Any:
        """The batch split by its sources' shards, each part sent to its leader (at once), the
        results put back in the request's order; what a node could not take goes to the gateways."""
        parts: dict[Leader | None, list[int]] = {}
        routes: Routes | None = None
        for index, item in enumerate(request.transfers):
            slot = slot_of_account(item.from_account)
            target = self.leader(slot) if slot is not None else None
            if target is not None:
                routes = target[1]
            parts.setdefault(target[0] if target is not None else None, []).append(index)
        results: list[Any] = [None] * len(request.transfers)
        sent = [
            (request, deadline, fallback, leader, routes, indexes, results)
            for leader, indexes in parts.items()
        ]
        if len(sent) == 1:
            self._send_part(*sent[0])
        else:
            pool = self._parts_pool()
            for future in [pool.submit(self._send_part, *part) for part in sent]:
                future.result()
        return ledger_pb2.CreateTransfersResponse(results=results)

    def _send_part(
        self, request: Any, deadline: float, fallback: Fallback, leader: Leader | None,
        routes: Routes | None, indexes: list[int], results: list[Any],
    ) -> None:  # fmt: skip
        """One shard's part to its leader (None: to the gateways); a transfer the node refused
        for where it was sent goes to the gateways too."""
        batch = ledger_pb2.CreateTransfersRequest(
            transfers=[request.transfers[i] for i in indexes], full_transfers=request.full_transfers
        )
        if leader is not None and routes is not None:
            try:
                answer = self._send("ledger", "CreateTransfers", batch, deadline, leader, routes)
            except grpc.RpcError as err:
                if err.code() not in REDIRECT_CODES or deadline - self._clock() <= 0:
                    raise
            else:
                again = [n for n, result in enumerate(answer.results) if _sent_elsewhere(result)]
                for n, result in enumerate(answer.results):
                    result.index = indexes[n]
                    results[indexes[n]] = result
                if not again:
                    return
                if any(answer.results[n].reason != "SLOT_MOVING" for n in again):
                    self.refresh(routes)
                indexes = [indexes[n] for n in again]
                batch = ledger_pb2.CreateTransfersRequest(
                    transfers=[request.transfers[i] for i in indexes], full_transfers=request.full_transfers
                )
        answer = fallback(batch, deadline - self._clock())
        for index, result in zip(indexes, answer.results, strict=True):
            result.index = index
            results[index] = result

    def _parts_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="bankclient-parts")
            return self._pool

    def _stub(self, service: str, endpoint: str) -> Any:
        key = (service, endpoint)
        stub = self._stubs.get(key)
        if stub is not None:
            return stub
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self._channels[endpoint] = self._open_channel(endpoint)
            stub = self._stubs[key] = STUBS[service](channel)
            return stub

    def endpoints(self) -> Sequence[str]:
        with self._lock:
            return sorted(self._channels)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()


def _sent_elsewhere(result: Any) -> bool:
    """A transfer a node refused for where it was sent (the gateways send it again), not for what it is."""
    return result.code == "UNAVAILABLE" and (result.reason in REDIRECT_REASONS or not result.reason)


class _Closed(grpc.RpcError):
    """A node's channel was closed under a call (the table no longer names it): as UNAVAILABLE."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f"{endpoint} leads no shard any more")
        self._endpoint = endpoint

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return f"{self._endpoint} leads no shard any more"

    def trailing_metadata(self) -> tuple[()]:
        return ()
