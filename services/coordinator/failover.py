"""Failing a shard over to the most advanced surviving standby.

Run by one node at a time (under the shard's ZooKeeper lock) once the leader's session is gone:
1. detach every live standby from the old primary: from then on nothing committed there can be
   acknowledged (with `ANY 1` a commit waits for a standby);
2. pick the standby that received the most WAL: with `ANY 1`, it holds every acknowledged commit;
3. promote it, give every other member a slot on it, re-point the other live standbys;
4. write the new route with the epoch bumped (compare-and-set), then mirror it into Redis.
The choice is written down before the promotion (/bank/failover/<n>): a failover cut short after
it (its node died, a re-pointing failed) is finished by the next one with the member it promoted.
Choosing again would promote a second member, one that may lack commits only the first one had.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
import redis
from redis.sentinel import Sentinel

from services.common.routes import RoutingTable, ShardRoute
from services.coordinator import pg_control
from services.coordinator.view import ClusterView
from services.dcs.store import Dcs
from services.routing import redis_mirror

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 15.0


def fail_over(dcs: Dcs, view: ClusterView, shard: int) -> ShardRoute | None:
    """Moves the shard's leadership; None when there is nothing to do or nobody to take it."""
    started = time.monotonic()
    route, version = dcs.read_route(shard)
    survivors = [dc for dc in dcs.live_members(shard) if dc != route.leader_dc]
    members = [s for s in (pg_control.probe(view, shard, dc) for dc in survivors) if s]
    standbys = [s for s in members if s.in_recovery]
    chosen = dcs.chosen_before(shard, route.epoch)
    promoted = next((s for s in members if s.dc == chosen and not s.in_recovery), None)
    if promoted is not None:
        log.warning("event=failover_resumed shard=%s new_leader=%s", shard, promoted.dc)
        pg_control.ensure_slots(view, shard, promoted.dc)  # the cut may have come before them
        best, settled = promoted, standbys
    else:
        if not standbys:
            log.warning(
                "event=failover_impossible shard=%s reason=no_live_standby survivors=%s", shard, survivors
            )
            return None
        for standby in standbys:
            pg_control.detach(view, shard, standby.dc)
        # Positions read after the detachment cannot move any more.
        settled = [s for s in (pg_control.probe(view, shard, s.dc) for s in standbys) if s and s.in_recovery]
        best = max(settled, key=lambda s: (s.receive_lsn, s.dc == view.dc))
        log.info(
            "event=failover_chosen shard=%s old_leader=%s new_leader=%s positions=%s",
            shard, route.leader_dc, best.dc, {s.dc: s.receive_lsn for s in settled},
        )  # fmt: skip
        dcs.write_choice(shard, route.epoch, best.dc)
        pg_control.promote(view, shard, best.dc)
    for other in settled:
        if other.dc != best.dc:
            try:
                pg_control.follow(view, shard, other.dc, best.dc)
            except psycopg.Error as err:  # its node re-points it once it sees the new route
                log.warning(
                    "event=failover_repoint_failed shard=%s dc=%s error=%r", shard, other.dc, str(err)
                )
    new_route = ShardRoute(shard, best.dc, route.epoch + 1, view.node_endpoints[best.dc])
    dcs.set_route(new_route, version)
    dcs.clear_choice(shard)
    # Redis may be failing over itself (a lost DC can hold its primary): never wait for it here.
    threading.Thread(target=publish_routes, args=(dcs, view), name="publish-routes", daemon=True).start()
    log.info(
        "event=failover_done shard=%s leader=%s epoch=%s took_ms=%.0f",
        shard, best.dc, new_route.epoch, (time.monotonic() - started) * 1000,
    )  # fmt: skip
    return new_route


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


def switch_over(
    dcs: Dcs, view: ClusterView, shard: int, target_dc: str, stop_local: Callable[[], None]
) -> ShardRoute:
    """A planned move of the shard's leadership, run by the current leader (already drained:
    it serves no more writes for the shard): stop the primary cleanly, let the target replay
    every byte of it, promote the target, re-point the rest, publish the route."""
    started = time.monotonic()
    route, version = dcs.read_route(shard)
    assert route.leader_dc == view.dc, "only the leader moves its shard"
    primary = pg_control.probe(view, shard, view.dc)
    target = pg_control.probe(view, shard, target_dc)
    if primary is None or primary.in_recovery or target is None or not target.in_recovery:
        raise RuntimeError(f"shard {shard}: {target_dc} is not a live standby of a live primary here")
    final_lsn = primary.receive_lsn
    stop_local()  # a clean shutdown sends every WAL record to the connected standbys first
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while (caught := pg_control.replayed(view, shard, target_dc)) < final_lsn:
        if time.monotonic() > deadline:
            raise RuntimeError(f"shard {shard}: {target_dc} replayed {caught}, not {final_lsn}")
        time.sleep(0.02)
    pg_control.promote(view, shard, target_dc)
    for dc in view.members[shard]:
        if dc not in (view.dc, target_dc):
            member = pg_control.probe(view, shard, dc)
            if member is not None and member.in_recovery:
                pg_control.follow(view, shard, dc, target_dc)
    new_route = ShardRoute(shard, target_dc, route.epoch + 1, view.node_endpoints[target_dc])
    dcs.set_route(new_route, version)
    threading.Thread(target=publish_routes, args=(dcs, view), name="publish-routes", daemon=True).start()
    log.info(
        "event=switchover_done shard=%s from=%s to=%s epoch=%s took_ms=%.0f",
        shard, view.dc, target_dc, new_route.epoch, (time.monotonic() - started) * 1000,
    )  # fmt: skip
    return new_route
