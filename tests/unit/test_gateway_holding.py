"""The gateway holds a bounded number of requests per shard while the shard has no leader, and
leaves a silent former leader as soon as the shard's route names another."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import replace
from typing import Any

import grpc

from bank.v1 import account_pb2, account_pb2_grpc
from services.common.identifiers import NUM_SLOTS
from services.common.routes import RoutingTable, ShardRoute
from services.gateway import forwarder
from services.gateway.forwarder import Forwarder
from tests.eventually import eventually


class NoRouting:
    """A routing client never consulted by the counting under test; it remembers who listens."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def on_change(self, callback: Any) -> None:
        self.listeners.append(callback)


def test_held_requests_per_shard_are_bounded() -> None:
    gate = Forwarder(NoRouting())  # type: ignore[arg-type]
    assert all(gate._hold(7) for _ in range(forwarder.MAX_HELD_PER_SHARD))
    assert not gate._hold(7)  # the next one is refused
    assert gate._hold(8)  # another shard has its own bound


def test_a_request_waiting_to_retry_wakes_when_the_routing_table_changes() -> None:
    routing = NoRouting()
    gate = Forwarder(routing)  # type: ignore[arg-type]
    waited: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        gate._wait_for_route(5.0)
        waited.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    eventually(lambda: gate._table_changed._waiters, 2, "the request to wait")  # type: ignore[attr-defined]
    for listener in routing.listeners:
        listener(RoutingTable(version=2, slot_ranges=[]))  # a new table
    waiter.join(timeout=5)
    assert waited and waited[0] < 1.0


class Leader(account_pb2_grpc.AccountServiceServicer):
    """A bank-node leading a shard; a silent one (cut off) never answers."""

    def __init__(self, silent: bool) -> None:
        self.silent, self.asked = silent, threading.Event()
        self.released = threading.Event()

    def GetAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.asked.set()
        if self.silent:
            self.released.wait(10)
        return account_pb2.GetAccountResponse(
            account=account_pb2.Account(account_number=request.account_number)
        )


class OneShardRouting:
    """Shard 0's route, changed by `lead_from`; listeners told of every new table."""

    def __init__(self, endpoint: str) -> None:
        self.table = RoutingTable(1, [(0, NUM_SLOTS - 1, 0)], {0: ShardRoute(0, "dc3", 7, endpoint)})
        self.listeners: list[Any] = []

    def on_change(self, callback: Any) -> None:
        self.listeners.append(callback)

    def route(self, shard: int) -> ShardRoute:
        return self.table.routes[shard]

    def link_delay_s(self, dc: str, other: str) -> float:
        return 0.0

    def refresh(self, from_truth: bool = False) -> None:
        pass

    def lead_from(self, endpoint: str) -> None:
        route = replace(self.table.routes[0], leader_dc="dc1", epoch=8, endpoint=endpoint)
        self.table = RoutingTable(2, self.table.slot_ranges, {0: route})
        for listener in self.listeners:
            listener(self.table)


def serve(leader: Leader) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    account_pb2_grpc.add_AccountServiceServicer_to_server(leader, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


class Caller:
    """The servicer context of the gateway's caller: 5 s of deadline."""

    def __init__(self) -> None:
        self.ends = time.monotonic() + 5.0

    def time_remaining(self) -> float:
        return self.ends - time.monotonic()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"the call failed: {code} {details}")


def test_a_request_waiting_on_a_silent_leader_goes_to_its_successor_as_soon_as_the_route_names_it() -> None:
    silent, successor = Leader(silent=True), Leader(silent=False)
    (old_server, old_endpoint), (new_server, new_endpoint) = serve(silent), serve(successor)
    routing = OneShardRouting(old_endpoint)
    gate = Forwarder(routing)  # type: ignore[arg-type]
    answers: list[Any] = []
    request = account_pb2.GetAccountRequest(account_number="0000000000000018")
    try:
        sender = threading.Thread(
            target=lambda: answers.append(
                gate.call("bank.v1.AccountService", "GetAccount", 0, request, Caller())  # type: ignore[arg-type]
            )
        )
        sender.start()
        eventually(silent.asked.is_set, 5, "the request to reach the silent leader")
        changed = time.monotonic()
        routing.lead_from(new_endpoint)
        sender.join(timeout=5)
        took = time.monotonic() - changed
        assert answers and answers[0].account.account_number == "0000000000000018"
        assert successor.asked.is_set()
        assert took < forwarder.ATTEMPT_TIMEOUT_S / 2, took  # not the rest of the attempt's timeout
    finally:
        silent.released.set()
        gate.close()
        old_server.stop(None)
        new_server.stop(None)
