"""AdminService of a gateway (admin credential only): the topology as this gateway routes it
(GetTopology also for the client credential: clients that route themselves read it, as Redis
Cluster clients read CLUSTER SLOTS), and the fault hook the chaos tools use to slow the links
between DCs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
import redis

from bank.v1 import admin_pb2, admin_pb2_grpc
from services.common.errors import InvalidArgument, Unavailable
from services.routing import redis_mirror
from services.routing.client import RoutingClient
from services.rpc.status import rpc_method

DC_NAME = re.compile(r"^dc[1-9]$")
MAX_DELAY_MS = 10_000


def _links(links: dict[str, int]) -> list[admin_pb2.LinkDelay]:
    pairs = (key.split("|", 1) for key in sorted(links))
    return [admin_pb2.LinkDelay(from_dc=a, to_dc=b, delay_ms=links[f"{a}|{b}"]) for a, b in pairs]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """`primary` gives a client of the current Redis primary (found through the Sentinels)."""

    def __init__(self, dc: str, routing: RoutingClient, primary: Callable[[], redis.Redis]) -> None:
        self.dc = dc
        self.routing = routing
        self.primary = primary

    @rpc_method
    def GetTopology(self, request: Any, context: grpc.ServicerContext) -> Any:
        table = self.routing.refresh(from_truth=True)
        return admin_pb2.GetTopologyResponse(
            dc=self.dc,
            routing_version=table.version,
            leaders=[
                admin_pb2.ShardLeader(
                    shard=r.shard, leader_dc=r.leader_dc, endpoint=r.endpoint, epoch=r.epoch
                )
                for r in sorted(table.routes.values(), key=lambda r: r.shard)
            ],
            slots=[admin_pb2.SlotRange(first_slot=a, last_slot=b, shard=s) for a, b, s in table.slot_ranges],
            link_delays=_links(self.routing.links()),
        )

    @rpc_method
    def SetLinkDelay(self, request: Any, context: grpc.ServicerContext) -> Any:
        for field, value in (("dc", request.dc), ("other_dc", request.other_dc)):
            if not DC_NAME.match(value):
                raise InvalidArgument(field, f"must name a DC (dc1..dc9), not {value[:20]!r}")
        if request.dc == request.other_dc:
            raise InvalidArgument("other_dc", "must differ from dc: a DC has no link to itself")
        if request.delay_ms > MAX_DELAY_MS:
            raise InvalidArgument("delay_ms", f"must be at most {MAX_DELAY_MS}, not {request.delay_ms}")
        try:
            client = self.primary()
            try:
                links = redis_mirror.set_link_delay(client, request.dc, request.other_dc, request.delay_ms)
            finally:
                client.close()
        except redis.RedisError as err:
            raise Unavailable(f"the Redis primary could not be reached: {err}; retry") from err
        return admin_pb2.SetLinkDelayResponse(link_delays=_links(links))
