"""`bankctl up` and `bankctl down`: a whole cluster of real processes, started in order, waited
for, recorded by PID, and stopped by those PIDs."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.cluster import coordination
from services.cluster.netns import create_network, delete_network, in_dc, probe_netem
from services.cluster.node_process import start_node
from services.cluster.pg_group import member_instance, start_shard_group
from services.cluster.processes import LaunchError, pid_alive, terminate, wait_until
from services.cluster.redis_group import (
    redis_role,
    sentinel_peers,
    sentinel_primary,
    start_redis,
    start_sentinel,
)
from services.cluster.service_user import remove_data_root
from services.cluster.state import ClusterState, Component
from services.cluster.topology import NODE_PORT, REDIS_PORT, ClusterSpec
from services.cluster.zookeeper import start_zookeeper, zk_hosts, zk_mode
from services.node.server import NodeConfig

Say = Callable[[str], None]
STOP_ORDER = ["gateway", "node", "postgres", "sentinel", "redis", "zookeeper"]


def up(home: Path, spec: ClusterSpec, say: Say) -> ClusterState:
    """Starts the cluster and returns once every component is healthy; on any failure it says
    what failed and where its log is, stops what it had started, and raises."""
    existing = ClusterState.load(home)
    if existing is not None:
        if existing.status == "up" and all(pid_alive(c.pid) for c in existing.components if c.pid):
            say(f"a cluster is already up in {existing.home}; nothing to do (`bankctl down` stops it)")
            return existing
        say("found the record of a cluster that is not fully running; cleaning it up first")
        down(home, say)
    state = ClusterState.new(spec, home)
    state.started_at = time.time()
    state.save()
    started = time.monotonic()
    try:
        _start_network(state, say)
        _start_zookeeper(state, say)
        _start_redis(state, say)
        _start_postgres(state, say)
        _write_topology(state, say)
        _start_nodes(state, say)
    except BaseException as err:
        say(f"FAILED: {err}")
        say("stopping what was started")
        down(home, say, keep_logs=True)
        raise
    state.status = "up"
    state.save()
    elapsed = time.monotonic() - started
    say(f"cluster up in {elapsed:.1f} s: {spec.dcs} DCs, {spec.shards} shards, net={spec.net}")
    return state


def _start_network(state: ClusterState, say: Say) -> None:
    spec = state.spec
    create_network(spec)
    available, detail = probe_netem(spec)
    state.netem = {"available": available, "detail": detail}
    state.save()
    where = ", ".join(f"{dc}={spec.address(dc)}" for dc in spec.dc_names)
    say(f"network ({spec.net}): {where}; {detail}")


def _start_zookeeper(state: ClusterState, say: Say) -> None:
    spec = state.spec
    for dc in spec.dc_names:
        start_zookeeper(state, dc)
    wait_until(
        lambda: all(zk_mode(spec.address(dc)) in ("leader", "follower") for dc in spec.dc_names),
        60,
        f"ZooKeeper ensemble to form (logs: {state.home / 'logs'}/zookeeper-*.log)",
        interval_s=0.2,
    )
    modes = {dc: zk_mode(spec.address(dc)) for dc in spec.dc_names}
    say("zookeeper: " + ", ".join(f"{dc} {mode}" for dc, mode in modes.items()))


def _start_redis(state: ClusterState, say: Say) -> None:
    spec = state.spec
    primary_dc = spec.dc_names[0]
    primary = spec.address(primary_dc)
    for dc in spec.dc_names:
        start_redis(state, dc, None if dc == primary_dc else primary)
    wait_until(
        lambda: redis_role(primary) == ("master", spec.dcs - 1),
        30,
        f"Redis replicas to connect to {primary} (logs: {state.home / 'logs'}/redis-*.log)",
        interval_s=0.1,
    )
    for dc in spec.dc_names:
        start_sentinel(state, dc, primary)
    wanted = f"{primary}:{REDIS_PORT}"
    wait_until(
        lambda: all(
            sentinel_primary(spec.address(dc)) == wanted and sentinel_peers(spec.address(dc)) == spec.dcs - 1
            for dc in spec.dc_names
        ),
        30,
        f"Sentinels to agree on {wanted} (logs: {state.home / 'logs'}/sentinel-*.log)",
        interval_s=0.2,
    )
    say(f"redis: primary {primary_dc} with {spec.dcs - 1} replicas; {spec.dcs} sentinels agree on it")


def _start_postgres(state: ClusterState, say: Say) -> None:
    spec = state.spec
    # Shards build in parallel; each waits for its own standbys.
    with ThreadPoolExecutor(max_workers=min(spec.shards, 4)) as pool:
        for future in [pool.submit(start_shard_group, state, shard, say) for shard in range(spec.shards)]:
            future.result()


def _write_topology(state: ClusterState, say: Say) -> None:
    client = coordination.connect(zk_hosts(state.spec))
    try:
        coordination.write_initial_topology(client, state.spec)
        routes = coordination.read_routes(client)
    finally:
        client.stop()
        client.close()
    listed = ", ".join(
        f"shard {route.shard} -> {route.leader_dc} (epoch {route.epoch})"
        for route in sorted(routes.values(), key=lambda route: route.shard)
    )
    say(f"zookeeper holds the slot map and the routes: {listed}")


def _start_nodes(state: ClusterState, say: Say) -> None:
    spec = state.spec
    for dc in spec.dc_names:
        led = [shard for shard in range(spec.shards) if spec.primary_dc(shard) == dc]
        config = NodeConfig(
            shards={
                shard: member_instance(state, shard, dc).conninfo(application_name=f"node-{dc}")
                for shard in led
            },
            slot_ranges=spec.slot_ranges(),
            listen=f"{spec.address(dc)}:{NODE_PORT}",
        )
        name = f"node-{dc}"
        log_file = state.home / "logs" / f"{name}.log"
        node = start_node(name, config, state.home / "run", log_file, in_dc(spec, dc, []), dc=dc)
        state.add(Component(dc, "node", name, spec.address(dc), node.port, node.pid, str(log_file)))
        say(f"bank-node {dc}: serving shards {led or 'none'} on {spec.address(dc)}:{node.port}")


def down(home: Path, say: Say, keep_logs: bool = True) -> None:
    """Stops every process the record names, by PID, then removes the network and the data."""
    state = ClusterState.load(home)
    if state is None:
        say(f"no cluster recorded in {home.resolve()}; nothing to stop")
        return
    state.status = "stopping"
    state.save()
    for kind in STOP_ORDER:
        for component in state.find(kind):
            _stop(state, component, say)
    delete_network(state.spec)
    _remove_data(state, keep_logs)
    state.forget()
    say(
        "cluster down: every recorded process stopped"
        + (", namespaces removed" if state.spec.net == "netns" else "")
    )


def _stop(state: ClusterState, component: Component, say: Say) -> None:
    if component.kind == "postgres" and component.shard is not None:
        instance = member_instance(state, component.shard, component.dc)
        pid = instance.pid() or component.pid
        if pid and pid_alive(pid):
            instance.stop(timeout_s=30)
            say(f"stopped {component.name} (pid {pid})")
        return
    if component.pid and pid_alive(component.pid):
        # Redis and ZooKeeper save nothing we need; the node drains its calls on SIGTERM.
        terminate(component.pid, grace_s=10, first=signal.SIGTERM)
        say(f"stopped {component.name} (pid {component.pid})")


def _remove_data(state: ClusterState, keep_logs: bool) -> None:
    remove_data_root(state.home, "pg")
    for folder in ("zookeeper", "redis", "sentinel", "run"):
        shutil.rmtree(state.home / folder, ignore_errors=True)
    if not keep_logs:
        shutil.rmtree(state.home / "logs", ignore_errors=True)


def require_state(home: Path) -> ClusterState:
    state = ClusterState.load(home)
    if state is None:
        raise LaunchError(f"no cluster in {home.resolve()}; start one with `bankctl up`")
    return state
