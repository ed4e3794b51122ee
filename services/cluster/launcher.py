"""`bankctl up` and `bankctl down`: a whole cluster of real processes, started in order, waited
for, recorded by PID, and stopped by those PIDs."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from services.cluster.bulk_load import ACCOUNTS_FILE
from services.cluster.credentials import DEFAULT_CLIENT_RATE_PER_S, write_credentials
from services.cluster.netns import create_network, delete_network, in_dc, probe_netem
from services.cluster.pg_group import member_instance, start_shard_group
from services.cluster.prometheus import start_prometheus
from services.cluster.redis_group import (
    redis_role,
    sentinel_peers,
    sentinel_primary,
    start_redis,
    start_sentinel,
)
from services.cluster.service_config import gateway_config, node_config
from services.cluster.service_process import start_service
from services.cluster.state import ClusterState, Component, begin_stopping
from services.cluster.tls import make_certificates
from services.cluster.topology import (
    GATEWAY_METRICS_PORT,
    NODE_METRICS_PORT,
    REDIS_PORT,
    ClusterSpec,
)
from services.cluster.zookeeper import start_zookeeper, zk_client, zk_mode
from services.common.calendar import starting
from services.common.routes import ShardRoute
from services.dcs import business_day as bank_day
from services.host.processes import LaunchError, pid_alive, terminate, wait_until
from services.host.service_user import remove_data_root
from services.routing import redis_mirror

Say = Callable[[str], None]
STOP_ORDER = ["prometheus", "gateway", "node", "postgres", "sentinel", "redis", "zookeeper"]


def up(
    home: Path, spec: ClusterSpec, say: Say, client_rate_per_s: float = DEFAULT_CLIENT_RATE_PER_S,
    with_prometheus: bool = False,
) -> ClusterState:  # fmt: skip
    """Starts the cluster and returns once every component is healthy; on any failure it says
    what failed and where its log is, stops what it had started, and raises."""
    existing = ClusterState.load(home)
    if existing is not None:
        if existing.status == "up" and all(pid_alive(c.pid) for c in existing.components if c.pid):
            say(f"a cluster is already up in {existing.home}; nothing to do (`bankctl down` stops it)")
            return existing
        say("found the record of a cluster that is not fully running; cleaning it up first")
        down(home, say)
    forget_accounts(home)  # left by a cluster that was never brought down
    state = ClusterState.new(spec, home)
    state.started_at = time.time()
    state.save()
    write_credentials(state, client_rate_per_s)
    if spec.tls:
        make_certificates(spec, state.home)
    started = time.monotonic()
    try:
        _start_network(state, say)
        _start_zookeeper(state, say)
        _start_redis(state, say)
        _start_postgres(state, say)
        write_topology(state, say)
        _start_nodes(state, say)
        _start_gateways(state, say)
        if with_prometheus:
            prometheus = start_prometheus(state)
            say(f"prometheus: http://{prometheus.host}:{prometheus.port} scrapes every node and gateway")
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


def _running(state: ClusterState, kind: str, ready: Callable[[], bool]) -> Callable[[], bool]:
    """`ready`, but failing at once, naming the component and its log, if one of `kind` died."""

    def check() -> bool:
        for component in state.find(kind):
            if component.pid and not pid_alive(component.pid):
                raise LaunchError(f"{component.name} exited while starting; log: {component.log}")
        return ready()

    return check


def _start_zookeeper(state: ClusterState, say: Say) -> None:
    spec = state.spec
    for dc in spec.dc_names:
        start_zookeeper(state, dc)
    wait_until(
        _running(
            state,
            "zookeeper",
            lambda: all(zk_mode(spec.address(dc)) in ("leader", "follower") for dc in spec.dc_names),
        ),
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
    password = state.secrets["redis_password"]
    for dc in spec.dc_names:
        start_redis(state, dc, None if dc == primary_dc else primary)
    wait_until(
        _running(state, "redis", lambda: redis_role(primary, password=password) == ("master", spec.dcs - 1)),
        30,
        f"Redis replicas to connect to {primary} (logs: {state.home / 'logs'}/redis-*.log)",
        interval_s=0.1,
    )
    for dc in spec.dc_names:
        start_sentinel(state, dc, primary)
    wanted = f"{primary}:{REDIS_PORT}"
    wait_until(
        _running(
            state,
            "sentinel",
            lambda: all(
                sentinel_primary(spec.address(dc), password=password) == wanted
                and sentinel_peers(spec.address(dc), password=password) == spec.dcs - 1
                for dc in spec.dc_names
            ),
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


def write_topology(state: ClusterState, say: Say) -> None:
    """The truth into ZooKeeper, then its mirror into Redis (through the primary Sentinel names)."""
    spec = state.spec
    routes = [
        ShardRoute(shard, spec.primary_dc(shard), 1, spec.node_endpoint(spec.primary_dc(shard)))
        for shard in range(spec.shards)
    ]
    with zk_client(state) as dcs:
        dcs.write_initial(spec.slot_ranges(), routes)
        bank_day.write_initial(dcs, starting(spec.time_zone, spec.day_seconds, time.time()))
        table = dcs.read_table()
    password = state.secrets["redis_password"]
    primary = sentinel_primary(spec.address(spec.dc_names[0]), password=password)
    if primary is None:
        raise LaunchError("no Sentinel names a Redis primary; cannot publish the routing table")
    host, port = primary.rsplit(":", 1)
    client_redis = redis.Redis(host=host, port=int(port), password=password, socket_timeout=2)
    try:
        redis_mirror.publish(client_redis, table)
    finally:
        client_redis.close()
    listed = ", ".join(f"shard {r.shard} -> {r.leader_dc} (epoch {r.epoch})" for r in routes)
    say(f"routing table v{table.version} in ZooKeeper and Redis: {listed}")


def _start_nodes(state: ClusterState, say: Say) -> None:
    spec = state.spec
    for dc in spec.dc_names:
        config = node_config(state, dc)
        name = f"node-{dc}"
        log_file = state.home / "logs" / f"{name}.log"
        node = start_service(
            "services.node", name, config.to_json(), state.home / "run", log_file, in_dc(spec, dc, []),
            extra_args=["--dc", dc],
        )  # fmt: skip
        state.add(
            Component(dc, "node", name, spec.address(dc), node.port, node.pid, str(log_file),
                      metrics_port=NODE_METRICS_PORT)
        )  # fmt: skip
    with zk_client(state) as dcs:
        wait_until(
            _running(state, "node", lambda: all(dcs.leader_exists(s) for s in range(spec.shards))),
            60,
            f"every shard to have a serving leader (logs: {state.home / 'logs'}/node-*.log)",
            interval_s=0.1,
        )
    led = {dc: [s for s in range(spec.shards) if spec.primary_dc(s) == dc] for dc in spec.dc_names}
    say("bank-nodes: " + "; ".join(f"{dc} leads shards {shards or 'none'}" for dc, shards in led.items()))


def _start_gateways(state: ClusterState, say: Say) -> None:
    spec = state.spec
    for dc in spec.dc_names:
        config = gateway_config(state, dc)
        name = f"gateway-{dc}"
        log_file = state.home / "logs" / f"{name}.log"
        gateway = start_service(
            "services.gateway", name, config, state.home / "run", log_file, in_dc(spec, dc, [])
        )
        state.add(
            Component(dc, "gateway", name, spec.address(dc), gateway.port, gateway.pid, str(log_file),
                      metrics_port=GATEWAY_METRICS_PORT)
        )  # fmt: skip
    say("gateways: " + ", ".join(spec.gateway_endpoint(dc) for dc in spec.dc_names))


def down(home: Path, say: Say, keep_logs: bool = True) -> None:
    """Stops every process the record names, by PID, then removes the network and the data."""
    state = begin_stopping(home, say)
    if state is None:
        return
    for kind in STOP_ORDER:
        # A kind stops all at once: nodes stopping one by one would fail shards over to each other.
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda c: _stop(state, c, say), state.find(kind)))
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
    for folder in ("zookeeper", "redis", "sentinel", "run", "prometheus"):
        shutil.rmtree(state.home / folder, ignore_errors=True)
    forget_accounts(state.home)
    if not keep_logs:
        shutil.rmtree(state.home / "logs", ignore_errors=True)


def forget_accounts(home: Path) -> None:
    """The account numbers and acknowledged-transfer logs of a cluster die with it: a later
    cluster in the same home must not send its load to accounts that no longer exist."""
    (home / ACCOUNTS_FILE).unlink(missing_ok=True)
    shutil.rmtree(home / "acked", ignore_errors=True)
