"""`bankctl add-shard`: a new shard while the bank serves. A PostgreSQL group like the others
(primary and synchronous standbys in the other DCs, `ANY 1`, the same settings and
credentials), registered in ZooKeeper (its members for the nodes, its route for gateways and
relays) and led by the node of its primary DC. It owns no slot until slots move to it
(`bankctl move-slots` or `rebalance`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.cluster.launcher import require_state
from services.cluster.pg_group import member_instance, start_shard_group
from services.cluster.processes import LaunchError, wait_until
from services.cluster.zookeeper import zk_client
from services.routing import zk_routes
from services.routing.table import ShardRoute
from services.storage.migrate import apply_migrations

MAX_SHARDS = 64


def add_shard(home: Path, primary_dc: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    state = require_state(home)
    spec = state.spec
    shard = spec.shards
    if shard >= MAX_SHARDS:
        raise LaunchError(f"the bank has {shard} shards already, the most it takes")
    primary_dc = primary_dc or spec.primary_dc(shard)
    if primary_dc not in spec.dc_names:
        raise LaunchError(f"no DC {primary_dc}; the cluster has {', '.join(spec.dc_names)}")
    state.spec = dataclasses.replace(spec, shards=shard + 1)
    say(f"shard {shard}: a PostgreSQL group with its primary in {primary_dc}, standbys in the other DCs")
    start_shard_group(state, shard, say, primary_dc=primary_dc)
    primary = member_instance(state, shard, primary_dc)
    apply_migrations(primary.conninfo(application_name="bankctl-add-shard"), shard)
    state.save()
    members = {
        dc: {"name": m.name, "dc": dc, "host": m.host, "port": m.port, "data_dir": str(m.data_dir)}
        for dc in spec.dc_names
        for m in [member_instance(state, shard, dc)]
    }
    route = ShardRoute(shard, primary_dc, 1, state.spec.node_endpoint(primary_dc))
    client = zk_client(state)
    try:
        zk_routes.add_shard(client, route, members)
        wait_until(lambda: _led(client, shard), 60, f"shard {shard}'s node in {primary_dc} to lead it")
    finally:
        client.stop()
        client.close()
    say(f"shard {shard}: led by the node of {primary_dc}; it owns no slot yet (move-slots, rebalance)")
    return {"shard": shard, "primary_dc": primary_dc, "members": members}


def _led(client: Any, shard: int) -> bool:
    return bool(client.exists(f"{zk_routes.ROOT}/leaders/{shard}"))
