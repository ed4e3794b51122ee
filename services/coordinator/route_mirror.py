"""Mirroring ZooKeeper's routing table into Redis, which gateways and clients read first."""

from __future__ import annotations

import logging
import threading

import redis
from redis.sentinel import Sentinel

from services.common.routes import RoutingTable
from services.coordinator.view import ClusterView
from services.dcs.store import Dcs
from services.routing import redis_mirror

log = logging.getLogger(__name__)


def publish_routes(dcs: Dcs, view: ClusterView, only_if_behind: bool = False) -> RoutingTable | None:
    """Mirrors ZooKeeper's table into Redis through the primary Sentinel names (best effort:
    readers fall back to ZooKeeper, and every node mirrors again when the table changes)."""
    table = dcs.read_table()
    sentinels = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in view.sentinels)]
    try:
        password = view.redis_password or None
        primary = Sentinel(
            sentinels, socket_timeout=0.3, socket_connect_timeout=0.3,
            sentinel_kwargs={"password": password, "socket_timeout": 0.3, "socket_connect_timeout": 0.3},
        ).master_for("bank", socket_timeout=1.0, socket_connect_timeout=0.5, password=password)  # fmt: skip
        mirrored = redis_mirror.read(primary) if only_if_behind else None
        if mirrored is None or mirrored.version < table.version:
            redis_mirror.publish(primary, table)
        primary.close()
    except redis.RedisError as err:
        log.warning("event=routing_publish_failed version=%s error=%r", table.version, str(err))
        return None
    return table


def publish_soon(dcs: Dcs, view: ClusterView) -> None:
    """Publishes on a thread of its own: Redis may be failing over itself (a lost DC can hold its
    primary), and a failover never waits for it."""
    threading.Thread(target=publish_routes, args=(dcs, view), name="publish-routes", daemon=True).start()
