"""Calls from this node to the ShardService of the node leading another shard: the route, the
delay chaos put on the hop, one channel per peer, the route's epoch, and the call's metrics."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc

from bank.v1 import shard_pb2_grpc
from services.routing.client import RoutingClient
from services.rpc import metrics, tls
from services.rpc.auth import bearer
from services.rpc.status import EPOCH_KEY

SHARD_SERVICE = "bank.v1.ShardService"


class ShardPeers:
    def __init__(
        self, routing: RoutingClient, dc: str = "", token: str = "", root_certificates: bytes | None = None
    ) -> None:
        self.routing = routing
        self.dc = dc
        self.metadata: tuple[tuple[str, str], ...] = bearer(token) if token else ()
        self.root_certificates = root_certificates
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def call(self, shard: int, method: str, request: Any, timeout_s: float) -> Any:
        """`method` of ShardService at the leader of `shard`, as the routing table names it."""
        route = self.routing.route(shard)
        delay_s = self.routing.link_delay_s(self.dc, route.leader_dc)
        if delay_s:
            self._closed.wait(delay_s)
        stub = shard_pb2_grpc.ShardServiceStub(self._channel(route.endpoint))
        started = time.perf_counter()
        try:
            answer = getattr(stub, method)(
                request, timeout=timeout_s, metadata=((EPOCH_KEY, str(route.epoch)), *self.metadata)
            )
        except grpc.RpcError as err:
            metrics.observe_client_call(SHARD_SERVICE, method, err.code().name, time.perf_counter() - started)
            raise
        metrics.observe_client_call(SHARD_SERVICE, method, "OK", time.perf_counter() - started)
        return answer

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = tls.channel(endpoint, self.root_certificates)
                self._channels[endpoint] = channel
            return channel
