"""`bankctl add-shard` and `remove-shard`: the bank's shape changed while it serves.

add-shard: a new shard. A PostgreSQL group like the others
(primary and synchronous standbys in the other DCs, `ANY 1`, the same settings and
credentials), registered in ZooKeeper (its members for the nodes, its route for gateways and
relays) and led by the node of its primary DC. It owns no slot until slots move to it
(`bankctl move-slots` or `rebalance`).

remove-shard: its slots move to the others (batch by batch, as `rebalance`), then it retires:
nodes stop serving it and nothing fails it over (a marker in ZooKeeper), its route goes, its
PostgreSQL members stop; their data stays under the home until `down`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from services.cluster.pg_group import member_instance, start_shard_group
from services.cluster.slot_moves import rebalance
from services.cluster.state import require_state
from services.cluster.zookeeper import zk_client
from services.common.identifiers import new_transfer_id
from services.common.routes import RoutingTable, ShardRoute
from services.host.processes import LaunchError, wait_until
from services.storage import slot_copy
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
    with zk_client(state) as dcs:
        dcs.add_shard(route, members)
        wait_until(lambda: dcs.leader_exists(shard), 60, f"shard {shard}'s node in {primary_dc} to lead it")
    say(f"shard {shard}: led by the node of {primary_dc}; it owns no slot yet (move-slots, rebalance)")
    return {"shard": shard, "primary_dc": primary_dc, "members": members}


def remove_shard(home: Path, shard: int, batch: int, say: Callable[[str], None]) -> dict[str, Any]:
    state = require_state(home)
    if shard not in state.active_shards:
        raise LaunchError(f"no shard {shard} serves in this cluster (shards {state.active_shards})")
    if len(state.active_shards) < 2:
        raise LaunchError("the last shard cannot be removed: its slots would have nowhere to go")
    moves = rebalance(state, batch, say, leaving=shard)
    with zk_client(state) as dcs:
        left = [r for r in dcs.read_table().slot_ranges if r[2] == shard]
        if left:
            raise LaunchError(f"shard {shard} still owns slots {left}; run remove-shard again")
        heir = min(s for s in state.active_shards if s != shard)
        carried = _carry_books(state, dcs.read_table(), shard, heir)
        say(f"shard {shard}: {carried} system balance(s) (cash, transit) carried to shard {heir}")
        dcs.retire(shard)
        wait_until(lambda: not dcs.leader_exists(shard), 30, f"shard {shard} to lose its leader")
        dcs.delete_route(shard)
    for component in state.find("postgres", shard=shard):
        member_instance(state, shard, component.dc).stop()
        say(f"stopped {component.name} (its data stays in {component.data_dir} until down)")
    state.components = [c for c in state.components if not (c.kind == "postgres" and c.shard == shard)]
    state.retired = sorted({*state.retired, shard})
    state.save()
    say(f"shard {shard} retired after {len(moves)} move(s); shards now {state.active_shards}")
    return {"shard": shard, "moves": moves, "shards": state.active_shards}


def _carry_books(state: Any, table: RoutingTable, shard: int, heir: int) -> int:
    """The retiring shard's system balances, carried to `heir` in one transaction on each side."""

    def conninfo(s: int) -> str:
        route = table.routes.get(s)
        dc = route.leader_dc if route else state.spec.primary_dc(s)
        return member_instance(state, s, dc).conninfo(application_name="bankctl-remove-shard")

    note = f"shard {shard} retired: its system balances carried to shard {heir}"
    with (
        psycopg.connect(conninfo(shard)) as source,
        psycopg.connect(conninfo(heir)) as target,
        source.transaction(),
        target.transaction(),
    ):
        return slot_copy.carry_system_accounts(source, target, note, lambda: new_transfer_id(0))
