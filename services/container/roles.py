"""Each role of the compose cluster, started in its container through the launcher's own code
(the same configuration files, commands and settings as `bankctl up` writes), configured from
the environment instead of the launcher's record:

    python -m services.container.roles dc --dc dc1             # holds the DC's network namespace
    python -m services.container.roles zookeeper --dc dc1
    python -m services.container.roles redis --dc dc1          # a replica of whoever Sentinel names
    python -m services.container.roles sentinel --dc dc1
    python -m services.container.roles postgres --dc dc1 --shard 0   # the member and its keeper
    python -m services.container.roles init                    # slot map and routes, once
    python -m services.container.roles node --dc dc1
    python -m services.container.roles gateway --dc dc1
    python -m services.container.roles prometheus

A DC is one network namespace (the `dc` container's, which every container of the DC shares) with
one address on the backbone, so every process binds where the launcher's netns mode binds it.
Environment: BANK_DCS, BANK_SHARDS, BANK_NAME, BANK_OCTET (the topology, as `bankctl up` takes
it) and the cluster's secrets BANK_PG_PASSWORD, BANK_REDIS_PASSWORD, BANK_ZK_AUTH,
BANK_PEER_TOKEN, BANK_CLIENT_TOKEN, BANK_ADMIN_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from services.cluster import launcher
from services.cluster.credentials import DEFAULT_CLIENT_RATE_PER_S, write_credentials
from services.cluster.dc_lifecycle import current_redis_primary
from services.cluster.prometheus import prometheus_command
from services.cluster.redis_group import redis_command, sentinel_command
from services.cluster.service_config import gateway_config, node_config
from services.cluster.state import ClusterState, Component
from services.cluster.topology import COMPOSE, GATEWAY_METRICS_PORT, NODE_METRICS_PORT, ClusterSpec
from services.cluster.zookeeper import zk_hosts, zk_mode, zookeeper_command
from services.container.member_keeper import run_keeper
from services.host.processes import LaunchError, wait_until

HOME = Path("/var/lib/bank")
READY_DIR = Path("/run/bank")  # a tmpfs of the member's container (compose_file.py)
SECRETS = {
    "pg_password": "BANK_PG_PASSWORD",
    "redis_password": "BANK_REDIS_PASSWORD",
    "zk_auth": "BANK_ZK_AUTH",
    "peer_token": "BANK_PEER_TOKEN",
    "client_token": "BANK_CLIENT_TOKEN",
    "admin_token": "BANK_ADMIN_TOKEN",
}
ROLES = ["dc", "zookeeper", "redis", "sentinel", "postgres", "init", "node", "gateway", "prometheus"]


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"container: {name} must be set")
    return value


def state_from_env() -> ClusterState:
    """The cluster as the launcher would record it, from the environment."""
    spec = ClusterSpec(
        dcs=int(env("BANK_DCS", "3")), shards=int(env("BANK_SHARDS", "3")), net=COMPOSE,
        name=env("BANK_NAME", "bank"), octet=int(env("BANK_OCTET", "0")),
        time_zone=env("BANK_TIME_ZONE", "Asia/Shanghai"), day_seconds=float(env("BANK_DAY_SECONDS", "0")),
    )  # fmt: skip
    secrets = {key: env(name) for key, name in SECRETS.items()}
    return ClusterState(spec=spec, home=Path(env("BANK_HOME", str(HOME))), secrets=secrets, status="up")


def run(cmd: list[str]) -> int:
    """The role's process in the foreground (the container's init reaps and signals it)."""
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


def redis_primary(state: ClusterState, dc: str) -> str:
    """Whoever the other DCs' Sentinels name; on a new cluster (none answers) the first DC."""
    try:
        return current_redis_primary(state, exclude_dc=dc)
    except LaunchError:
        return state.spec.address(state.spec.dc_names[0])


def role_redis(state: ClusterState, dc: str) -> int:
    primary = redis_primary(state, dc)
    replica_of = None if primary == state.spec.address(dc) else primary
    print(f"redis {dc}: {'primary' if replica_of is None else f'replica of {replica_of}'}", flush=True)
    return run(
        redis_command(state.spec, dc, state.home / "redis", replica_of, state.secrets["redis_password"])
    )


def role_sentinel(state: ClusterState, dc: str) -> int:
    primary = redis_primary(state, dc)
    print(f"sentinel {dc}: watching {primary}", flush=True)
    return run(
        sentinel_command(state.spec, dc, state.home / "sentinel", primary, state.secrets["redis_password"])
    )


def role_init(state: ClusterState) -> int:
    """The routing table into ZooKeeper and Redis once the ensemble and Sentinels serve
    (harmless when it is there already: existing routes are left alone)."""
    spec = state.spec
    wait_until(
        lambda: all(zk_mode(spec.address(dc)) in ("leader", "follower") for dc in spec.dc_names),
        120, "the ZooKeeper ensemble to form", interval_s=0.5,
    )  # fmt: skip
    wait_until(lambda: _sentinel_named(state), 120, "the Sentinels to name a Redis primary", interval_s=0.5)
    launcher.write_topology(state, lambda line: print(f"init: {line}", flush=True))
    return 0


def _sentinel_named(state: ClusterState) -> bool:
    try:
        current_redis_primary(state)
    except LaunchError:
        return False
    return True


def role_service(state: ClusterState, dc: str, role: str) -> int:
    """A bank-node or gateway with the configuration the launcher writes for it."""
    write_credentials(state, float(env("BANK_CLIENT_RATE_PER_S", str(DEFAULT_CLIENT_RATE_PER_S))))
    config = node_config(state, dc).to_json() if role == "node" else gateway_config(state, dc)
    path = state.home / "run" / f"{role}-{dc}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    module = "services.node" if role == "node" else "services.gateway"
    extra = ["--dc", dc] if role == "node" else []
    return run([sys.executable, "-m", module, "--config", str(path), *extra])


def role_prometheus(state: ClusterState) -> int:
    spec = state.spec
    for dc in spec.dc_names:  # the scrape targets, as the launcher records them
        for kind, port in (("node", NODE_METRICS_PORT), ("gateway", GATEWAY_METRICS_PORT)):
            state.components.append(Component(dc, kind, f"{kind}-{dc}", spec.address(dc), 0, None, "",
                                              metrics_port=port))  # fmt: skip
    return run(prometheus_command(state, listen="0.0.0.0:9090"))


def hold_network() -> int:
    """The DC's namespace lives as long as this container: it only waits for its stop."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bank-container", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--dc")
    parser.add_argument("--shard", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.role == "dc":
        return hold_network()
    state = state_from_env()
    if args.role in ("init", "prometheus"):
        return role_init(state) if args.role == "init" else role_prometheus(state)
    dc = args.dc or env("BANK_DC")
    if dc not in state.spec.dc_names:
        raise SystemExit(f"container: no DC {dc!r} among {state.spec.dc_names}")
    if args.role == "zookeeper":
        return run(zookeeper_command(state.spec, dc, state.home / "zookeeper" / dc))
    if args.role == "redis":
        return role_redis(state, dc)
    if args.role == "sentinel":
        return role_sentinel(state, dc)
    if args.role == "postgres":
        if args.shard is None:
            raise SystemExit("container: the postgres role needs --shard")
        ready_dir = Path(env("BANK_READY_DIR", str(READY_DIR)))
        ready_dir.mkdir(parents=True, exist_ok=True)
        return run_keeper(state, args.shard, dc, zk_hosts(state.spec), ready_dir)
    return role_service(state, dc, args.role)


if __name__ == "__main__":
    sys.exit(main())
