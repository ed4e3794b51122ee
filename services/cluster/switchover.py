"""`bankctl switchover SHARD --to DC`: a planned move of a shard's leader, losing no request.

The request is a znode the current leader acts on: it drains the shard (gateways hold its
requests), stops its primary cleanly, waits until the target has replayed every byte, promotes
it, re-points the rest and publishes the route; then it rejoins as a standby.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.host.processes import LaunchError


def switchover(
    state: ClusterState, shard: int, target_dc: str, say: Callable[[str], None], timeout_s: float = 60
) -> float:
    """Returns the seconds the move took, from the request to the new leader serving."""
    spec = state.spec
    if not 0 <= shard < spec.shards:
        raise LaunchError(f"no shard {shard}; the cluster has shards 0-{spec.shards - 1}")
    if target_dc not in spec.dc_names:
        raise LaunchError(f"no DC {target_dc!r}; the cluster has {', '.join(spec.dc_names)}")
    with zk_client(state, timeout_s=10) as dcs:
        route, _ = dcs.read_route(shard)
        if route.leader_dc == target_dc:
            say(f"shard {shard} is already led by {target_dc} (epoch {route.epoch})")
            return 0.0
        started = time.monotonic()
        if not dcs.request_switchover(shard, target_dc):
            raise LaunchError(f"a switchover of shard {shard} is already under way")
        say(f"switchover of shard {shard}: {route.leader_dc} -> {target_dc} requested")
        deadline = time.monotonic() + timeout_s
        while True:
            now, _ = dcs.read_route(shard)
            if now.leader_dc == target_dc and dcs.leader_exists(shard):
                break
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"switchover of shard {shard} not done after {timeout_s:.0f} s; see the nodes' logs"
                )
            time.sleep(0.02)
        took = time.monotonic() - started
        say(f"shard {shard} is led by {target_dc} at epoch {now.epoch}, {took:.2f} s after the request")
        return took
