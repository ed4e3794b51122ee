"""Failing a shard over to the most advanced surviving standby.

Run by one node at a time (under the shard's ZooKeeper lock) once the leader's session is gone:
1. detach every live standby from the old primary: from then on nothing committed there can be
   acknowledged (with `ANY 1` a commit waits for a standby);
2. pick the standby that received the most WAL: with `ANY 1`, it holds every acknowledged commit;
3. promote it, give every other member a slot on it, re-point the other live standbys;
4. write the new route with the epoch bumped (compare-and-set); the caller mirrors it into Redis.
The choice is written down before the promotion (/bank/failover/<n>): a failover cut short after
it (its node died, a re-pointing failed) is finished by the next one with the member it promoted.
Choosing again would promote a second member, one that may lack commits only the first one had.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from services.common.routes import ShardRoute
from services.coordinator.members import Members
from services.coordinator.view import ClusterView
from services.dcs.store import Dcs

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 15.0
T = TypeVar("T")


def fail_over(
    dcs: Dcs,
    members: Members,
    view: ClusterView,
    shard: int,
    mark: Callable[[str], None] = lambda phase: None,
) -> ShardRoute | None:
    """Moves the shard's leadership; None when there is nothing to do or nobody to take it.
    `mark` is told as each phase ends (see phases.py)."""
    started = time.monotonic()
    route, version = dcs.read_route(shard)
    survivors = [dc for dc in dcs.live_members(shard) if dc != route.leader_dc]
    alive = [s for s in _each(lambda dc: members.probe(shard, dc), survivors) if s]
    standbys = [s for s in alive if s.in_recovery]
    mark("probe")
    chosen = dcs.chosen_before(shard, route.epoch)
    promoted = next((s for s in alive if s.dc == chosen and not s.in_recovery), None)
    if promoted is not None:
        log.warning("event=failover_resumed shard=%s new_leader=%s", shard, promoted.dc)
        members.ensure_slots(shard, promoted.dc)  # the cut may have come before them
        best, settled = promoted, standbys
    else:
        if not standbys:
            log.warning(
                "event=failover_impossible shard=%s reason=no_live_standby survivors=%s", shard, survivors
            )
            return None
        _each(lambda dc: members.detach(shard, dc), [s.dc for s in standbys])
        # Positions read after the detachment cannot move any more.
        settled = [s for s in _each(lambda dc: members.probe(shard, dc), [s.dc for s in standbys]) if s]
        settled = [s for s in settled if s.in_recovery]
        mark("detach")
        best = max(settled, key=lambda s: (s.receive_lsn, s.dc == view.dc))
        log.info(
            "event=failover_chosen shard=%s old_leader=%s new_leader=%s positions=%s",
            shard, route.leader_dc, best.dc, {s.dc: s.receive_lsn for s in settled},
        )  # fmt: skip
        dcs.write_choice(shard, route.epoch, best.dc)
        members.promote(shard, best.dc)
    mark("promote")
    for other in settled:
        if other.dc != best.dc:
            try:
                members.follow(shard, other.dc, best.dc)
            except Exception as err:  # its node re-points it once it sees the new route
                log.warning(
                    "event=failover_repoint_failed shard=%s dc=%s error=%r", shard, other.dc, str(err)
                )
    mark("repoint")
    new_route = ShardRoute(shard, best.dc, route.epoch + 1, view.node_endpoints[best.dc])
    dcs.set_route(new_route, version)
    mark("route")
    dcs.clear_choice(shard)
    log.info(
        "event=failover_done shard=%s leader=%s epoch=%s took_ms=%.0f",
        shard, best.dc, new_route.epoch, (time.monotonic() - started) * 1000,
    )  # fmt: skip
    return new_route


def _each(action: Callable[[str], T], dcs: list[str]) -> list[T]:
    """`action` on every DC's member at once (each is a connection and a statement or two),
    in the order given; an error of any is raised, after all are done."""
    if len(dcs) < 2:
        return [action(dc) for dc in dcs]
    with ThreadPoolExecutor(max_workers=len(dcs), thread_name_prefix="failover") as pool:
        return list(pool.map(action, dcs))


def switch_over(dcs: Dcs, members: Members, view: ClusterView, shard: int, target_dc: str) -> ShardRoute:
    """A planned move of the shard's leadership, run by the current leader (already drained:
    it serves no more writes for the shard): stop the primary cleanly, let the target replay
    every byte of it, promote the target, re-point the rest, publish the route."""
    started = time.monotonic()
    route, version = dcs.read_route(shard)
    assert route.leader_dc == view.dc, "only the leader moves its shard"
    primary = members.probe(shard, view.dc)
    target = members.probe(shard, target_dc)
    if primary is None or primary.in_recovery or target is None or not target.in_recovery:
        raise RuntimeError(f"shard {shard}: {target_dc} is not a live standby of a live primary here")
    final_lsn = primary.receive_lsn
    members.stop(shard, view.dc)  # a clean shutdown sends every WAL record to the connected standbys first
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while (caught := members.replayed(shard, target_dc)) < final_lsn:
        if time.monotonic() > deadline:
            raise RuntimeError(f"shard {shard}: {target_dc} replayed {caught}, not {final_lsn}")
        time.sleep(0.02)
    members.promote(shard, target_dc)
    for dc in view.members[shard]:
        if dc not in (view.dc, target_dc):
            member = members.probe(shard, dc)
            if member is not None and member.in_recovery:
                members.follow(shard, dc, target_dc)
    new_route = ShardRoute(shard, target_dc, route.epoch + 1, view.node_endpoints[target_dc])
    dcs.set_route(new_route, version)
    log.info(
        "event=switchover_done shard=%s from=%s to=%s epoch=%s took_ms=%.0f",
        shard, view.dc, target_dc, new_route.epoch, (time.monotonic() - started) * 1000,
    )  # fmt: skip
    return new_route
