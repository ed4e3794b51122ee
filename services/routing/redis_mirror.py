"""Redis as a fast, subscribable cache of the routing truth in ZooKeeper.

The table is one JSON value; every change is announced on a channel. Routes carry their epoch,
so a stale or split-brained Redis costs a retry, never a wrong write.
"""

from __future__ import annotations

import json

import redis

from services.common.routes import RoutingTable

TABLE_KEY = "bank:routing"
CHANNEL = "bank:routing:changed"
# Chaos: extra delay (ms) on the gRPC hop between two DCs, keyed "dcA|dcB" (no netem here).
LINKS_KEY = "bank:chaos:links"


def publish(primary: redis.Redis, table: RoutingTable) -> bool:
    """Stores the table unless Redis already holds a newer one; announces it. Atomic in Redis."""
    script = """
    local current = redis.call('GET', KEYS[1])
    if current then
      local version = tonumber(string.match(current, '"version": (%d+)'))
      if version and version >= tonumber(ARGV[2]) then return 0 end
    end
    redis.call('SET', KEYS[1], ARGV[1])
    redis.call('PUBLISH', KEYS[2], ARGV[2])
    return 1
    """
    stored = primary.eval(script, 2, TABLE_KEY, CHANNEL, table.to_json(), str(table.version))
    return bool(stored)


def read(client: redis.Redis) -> RoutingTable | None:
    raw = client.get(TABLE_KEY)
    if raw is None:
        return None
    return RoutingTable.from_json(raw)


def read_links(client: redis.Redis) -> dict[str, int]:
    raw = client.get(LINKS_KEY)
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


def set_link_delay(primary: redis.Redis, first: str, second: str, delay_ms: int) -> dict[str, int]:
    """Sets (or with 0 removes) the delay both ways between two DCs; announces it; returns all."""
    links = read_links(primary)
    for key in (f"{first}|{second}", f"{second}|{first}"):
        if delay_ms:
            links[key] = delay_ms
        else:
            links.pop(key, None)
    primary.set(LINKS_KEY, json.dumps(links))
    primary.publish(CHANNEL, "links")
    return links
