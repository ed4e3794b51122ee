"""The routing truth in ZooKeeper: the slot map and one node per shard with its leader and epoch."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.security import make_digest_acl

from services.routing.table import RoutingTable, ShardRoute

ROOT = "/bank"
SLOTS_PATH = f"{ROOT}/slots"
SHARDS_PATH = f"{ROOT}/shards"
# Shards added while the bank runs: their members, so that every node can serve them at once.
ADDED_SHARDS_PATH = f"{ROOT}/added-shards"
# Shards removed (their slots all moved away): nodes stop serving them, nothing fails them over.
RETIRED_SHARDS_PATH = f"{ROOT}/retired-shards"


def local_first(hosts: str, address: str) -> str:
    """The ensemble's connection string with the server at `address` first."""
    servers = hosts.split(",")
    return ",".join(sorted(servers, key=lambda server: not server.startswith(f"{address}:")))


def digest_auth(auth: str) -> dict[str, Any]:
    """KazooClient arguments for a `user:password` digest: it authenticates, and every znode it
    creates can be read and written by that user only."""
    if not auth:
        return {}
    user, password = auth.split(":", 1)
    return {"auth_data": [("digest", auth)], "default_acl": [make_digest_acl(user, password, all=True)]}


def connect(
    hosts: str, timeout_s: float = 10.0, session_s: float = 4.0, local: str = "", auth: str = ""
) -> KazooClient:
    """A started client; with `local` (an address), that server is tried first and kept."""
    client = KazooClient(
        hosts=local_first(hosts, local) if local else hosts,
        timeout=session_s,
        randomize_hosts=not local,
        connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
        **digest_auth(auth),
    )
    client.start(timeout=timeout_s)
    return client


def write_initial(
    client: KazooClient, slot_ranges: list[tuple[int, int, int]], routes: list[ShardRoute]
) -> None:
    """Creates the slot map and the shards' routes; leaves existing ones alone (up is idempotent)."""
    client.ensure_path(SHARDS_PATH)
    if not client.exists(SLOTS_PATH):
        ranges = [{"first": a, "last": b, "shard": s} for a, b, s in slot_ranges]
        client.create(SLOTS_PATH, json.dumps({"ranges": ranges}).encode())
    for route in routes:
        path = f"{SHARDS_PATH}/{route.shard}"
        if not client.exists(path):
            client.create(path, json.dumps(asdict(route)).encode())


def read_table(client: KazooClient, timeout_s: float | None = None) -> RoutingTable:
    """The whole table; its version is the newest ZooKeeper transaction id among its nodes.

    With `timeout_s`, every read gives up after that long (a client whose server is cut off
    would otherwise wait for its reconnection): the caller keeps what it had.
    """

    def get(path: str) -> tuple[bytes, Any]:
        return client.get(path) if timeout_s is None else client.get_async(path).get(timeout=timeout_s)

    try:
        raw, stat = get(SLOTS_PATH)
    except NoNodeError:
        return RoutingTable(version=0, slot_ranges=[])
    version = stat.mzxid
    ranges = [(int(r["first"]), int(r["last"]), int(r["shard"])) for r in json.loads(raw)["ranges"]]
    routes: dict[int, ShardRoute] = {}
    children = (
        client.get_children(SHARDS_PATH)
        if timeout_s is None
        else client.get_children_async(SHARDS_PATH).get(timeout=timeout_s)
    )
    for child in children:
        data, stat = get(f"{SHARDS_PATH}/{child}")
        route: dict[str, Any] = json.loads(data)
        routes[int(child)] = ShardRoute(
            int(route["shard"]), str(route["leader_dc"]), int(route["epoch"]), str(route["endpoint"])
        )
        version = max(version, stat.mzxid)
    return RoutingTable(version=version, slot_ranges=ranges, routes=routes)


def add_shard(client: KazooClient, route: ShardRoute, members: dict[str, Any]) -> None:
    """Registers a shard added while the bank runs: its members (read by every node), then its
    route (read by gateways and relays). Each is written once; running it again changes nothing."""
    client.ensure_path(ADDED_SHARDS_PATH)
    members_path = f"{ADDED_SHARDS_PATH}/{route.shard}"
    if not client.exists(members_path):
        client.create(members_path, json.dumps(members).encode())
    route_path = f"{SHARDS_PATH}/{route.shard}"
    if not client.exists(route_path):
        client.create(route_path, json.dumps(asdict(route)).encode())
