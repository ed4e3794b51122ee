"""The cluster's truth in ZooKeeper: the slot -> shard map and each shard's leader and epoch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from services.cluster.topology import ClusterSpec

ROOT = "/bank"
SLOTS_PATH = f"{ROOT}/slots"
SHARDS_PATH = f"{ROOT}/shards"


@dataclass(frozen=True)
class ShardRoute:
    shard: int
    leader_dc: str
    epoch: int  # fencing token: grows with every change of leader


def connect(hosts: str, timeout_s: float = 10.0) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=4.0, connection_retry={"max_tries": 3, "delay": 0.2})
    client.start(timeout=timeout_s)
    return client


def write_initial_topology(client: KazooClient, spec: ClusterSpec) -> None:
    """Creates the slot map and one route per shard at epoch 1; leaves existing ones alone."""
    client.ensure_path(SHARDS_PATH)
    if not client.exists(SLOTS_PATH):
        ranges = [{"first": a, "last": b, "shard": s} for a, b, s in spec.slot_ranges()]
        client.create(SLOTS_PATH, json.dumps({"ranges": ranges}).encode())
    for shard in range(spec.shards):
        path = f"{SHARDS_PATH}/{shard}"
        if not client.exists(path):
            route = ShardRoute(shard, spec.primary_dc(shard), 1)
            client.create(path, json.dumps(asdict(route)).encode())


def read_routes(client: KazooClient) -> dict[int, ShardRoute]:
    routes: dict[int, ShardRoute] = {}
    try:
        children = client.get_children(SHARDS_PATH)
    except NoNodeError:
        return routes
    for child in children:
        data: dict[str, Any] = json.loads(client.get(f"{SHARDS_PATH}/{child}")[0])
        routes[int(child)] = ShardRoute(int(data["shard"]), str(data["leader_dc"]), int(data["epoch"]))
    return routes
