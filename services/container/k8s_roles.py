"""The bank's processes in a Kubernetes pod: the same node and gateway as `bankctl up` starts,
configured from the environment (every role in its own pod, found by host name patterns).

    python -m services.container.k8s_roles init              # slot map and routes into ZooKeeper
    python -m services.container.k8s_roles tokens            # only the credentials' digests
    python -m services.container.k8s_roles node --dc dc1     # or BANK_DC, or the pod's ordinal
    python -m services.container.k8s_roles gateway --dc dc1

Environment: BANK_DCS, BANK_SHARDS (defaults as `bankctl up`: 3 and 3); secrets
BANK_PG_PASSWORD, BANK_REDIS_PASSWORD, BANK_ZK_AUTH (user:password), BANK_PEER_TOKEN,
BANK_CLIENT_TOKEN, BANK_ADMIN_TOKEN; host names as patterns with {dc}, {index} (0-based DC)
and {shard}: BANK_ZK_HOST, BANK_REDIS_HOST, BANK_SENTINEL_HOST, BANK_PG_HOST, BANK_NODE_HOST
(defaults: the compose service names zk-{dc}, redis-{dc}, sentinel-{dc}, pg-s{shard}-{dc},
node-{dc}); BANK_CREDENTIALS (a writable folder shared by init, nodes and gateways).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import redis
from kazoo.exceptions import KazooException

from services.cluster.topology import (
    GATEWAY_METRICS_PORT,
    GATEWAY_PORT,
    NODE_METRICS_PORT,
    NODE_PORT,
    PG_BASE_PORT,
    REDIS_PORT,
    SENTINEL_MASTER,
    SENTINEL_PORT,
    ZK_CLIENT_PORT,
    ClusterSpec,
)
from services.common.routes import ShardRoute
from services.coordinator.view import ClusterView, Member
from services.dcs.store import Dcs
from services.routing import redis_mirror
from services.rpc.auth import ADMIN, CLIENT, PEER, identity_entry

DEFAULT_HOSTS = {
    "BANK_ZK_HOST": "zk-{dc}",
    "BANK_REDIS_HOST": "redis-{dc}",
    "BANK_SENTINEL_HOST": "sentinel-{dc}",
    "BANK_PG_HOST": "pg-s{shard}-{dc}",
    "BANK_NODE_HOST": "node-{dc}",
}
PG_DATA = "/var/lib/postgresql/data"
CONTAINER_PG_PORT = PG_BASE_PORT  # one member per container: every member on the standard port


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"container: {name} must be set")
    return value


def host(kind: str, spec: ClusterSpec, dc: str, shard: int = 0) -> str:
    pattern = env(kind, DEFAULT_HOSTS[kind])
    return pattern.format(dc=dc, index=spec.dc_index(dc) - 1, shard=shard)


def spec_from_env() -> ClusterSpec:
    return ClusterSpec(dcs=int(env("BANK_DCS", "3")), shards=int(env("BANK_SHARDS", "3")))


def dc_from_env(spec: ClusterSpec, given: str | None) -> str:
    """--dc, BANK_DC, or the ordinal of a StatefulSet pod (name-2 -> dc3)."""
    dc = given or os.environ.get("BANK_DC")
    if not dc:
        match = re.search(r"-(\d+)$", socket.gethostname())
        if match is None:
            raise SystemExit("container: say which DC (--dc, BANK_DC, or a StatefulSet pod name)")
        dc = spec.dc_names[int(match.group(1))]
    if dc not in spec.dc_names:
        raise SystemExit(f"container: no DC {dc!r} among {spec.dc_names}")
    return dc


def zk_hosts(spec: ClusterSpec) -> str:
    return ",".join(f"{host('BANK_ZK_HOST', spec, dc)}:{ZK_CLIENT_PORT}" for dc in spec.dc_names)


def credentials() -> Path:
    return Path(env("BANK_CREDENTIALS", "/var/lib/bank/credentials"))


def view(spec: ClusterSpec, dc: str) -> ClusterView:
    members = {
        shard: {
            member_dc: Member(spec.pg_member(shard, member_dc), member_dc,
                              host("BANK_PG_HOST", spec, member_dc, shard), CONTAINER_PG_PORT, PG_DATA)
            for member_dc in spec.dc_names
        }
        for shard in range(spec.shards)
    }  # fmt: skip
    return ClusterView(
        dc=dc, dcs=spec.dc_names, shards=spec.shards, members=members,
        node_endpoints={d: f"{host('BANK_NODE_HOST', spec, d)}:{NODE_PORT}" for d in spec.dc_names},
        zk_hosts=zk_hosts(spec),
        sentinels=[f"{host('BANK_SENTINEL_HOST', spec, d)}:{SENTINEL_PORT}" for d in spec.dc_names],
        pg_password=env("BANK_PG_PASSWORD"), redis_password=env("BANK_REDIS_PASSWORD"),
        zk_auth=env("BANK_ZK_AUTH"), session_timeout_s=float(env("BANK_SESSION_TIMEOUT_S", "4")),
    )  # fmt: skip


def write_tokens() -> None:
    """The digests the node and gateway check, from the tokens in the environment."""
    folder = credentials()
    folder.mkdir(parents=True, exist_ok=True)
    identities = [
        identity_entry(
            "client", CLIENT, env("BANK_CLIENT_TOKEN"), float(env("BANK_CLIENT_RATE_PER_S", "5000"))
        ),
        identity_entry("admin", ADMIN, env("BANK_ADMIN_TOKEN")),
        identity_entry("peer", PEER, env("BANK_PEER_TOKEN")),
    ]
    (folder / "tokens.json").write_text(json.dumps({"identities": identities}, indent=2), encoding="utf-8")


def init(spec: ClusterSpec) -> None:
    """Writes the credentials' digests, then the slot map and first routes (ZooKeeper, then the
    Redis primary); harmless when done already."""
    write_tokens()
    routes = [
        ShardRoute(
            s, spec.primary_dc(s), 1, f"{host('BANK_NODE_HOST', spec, spec.primary_dc(s))}:{NODE_PORT}"
        )
        for s in range(spec.shards)
    ]
    for attempt in range(60):  # ZooKeeper may still be forming its quorum
        try:
            dcs = Dcs.connect(zk_hosts(spec), timeout_s=10, auth=env("BANK_ZK_AUTH"))
            break
        except (KazooException, TimeoutError) as err:
            print(f"container init: ZooKeeper not ready ({err}); attempt {attempt + 1}", flush=True)
            time.sleep(2)
    else:
        raise SystemExit("container init: ZooKeeper never answered")
    with dcs:
        dcs.write_initial(spec.slot_ranges(), routes)
        table = dcs.read_table()
    primary = redis.Redis(host=host("BANK_REDIS_HOST", spec, spec.dc_names[0]), port=REDIS_PORT,
                          password=env("BANK_REDIS_PASSWORD"), socket_timeout=5)  # fmt: skip
    try:
        redis_mirror.publish(primary, table)
    finally:
        primary.close()
    print(f"container init: routing table v{table.version} written", flush=True)


def node_config(spec: ClusterSpec, dc: str) -> dict[str, Any]:
    from services.node.server import NodeConfig

    return NodeConfig(
        shards={}, slot_ranges=spec.slot_ranges(), listen=f"0.0.0.0:{NODE_PORT}",
        redis_address=f"{host('BANK_REDIS_HOST', spec, dc)}:{REDIS_PORT}", zk_hosts=zk_hosts(spec),
        cluster=view(spec, dc).to_json(), peer_token=env("BANK_PEER_TOKEN"),
        tokens_file=str(credentials() / "tokens.json"), metrics_listen=f"0.0.0.0:{NODE_METRICS_PORT}",
    ).to_json()  # fmt: skip


def gateway_config(spec: ClusterSpec, dc: str) -> dict[str, Any]:
    return {
        "dc": dc, "listen": f"0.0.0.0:{GATEWAY_PORT}",
        "redis_address": f"{host('BANK_REDIS_HOST', spec, dc)}:{REDIS_PORT}", "zk_hosts": zk_hosts(spec),
        "zk_auth": env("BANK_ZK_AUTH"), "redis_password": env("BANK_REDIS_PASSWORD"),
        "sentinels": [f"{host('BANK_SENTINEL_HOST', spec, d)}:{SENTINEL_PORT}" for d in spec.dc_names],
        "sentinel_master": SENTINEL_MASTER, "peer_token": env("BANK_PEER_TOKEN"),
        "tokens_file": str(credentials() / "tokens.json"), "tls": None,
        "metrics_listen": f"0.0.0.0:{GATEWAY_METRICS_PORT}",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bank-container", description=__doc__)
    parser.add_argument("role", choices=["init", "tokens", "node", "gateway"])
    parser.add_argument("--dc")
    args = parser.parse_args(argv)
    spec = spec_from_env()
    if args.role in ("init", "tokens"):
        init(spec) if args.role == "init" else write_tokens()
        return 0
    dc = dc_from_env(spec, args.dc)
    config = node_config(spec, dc) if args.role == "node" else gateway_config(spec, dc)
    path = Path(env("BANK_RUN_DIR", "/tmp")) / f"{args.role}-{dc}.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    module = "services.node" if args.role == "node" else "services.gateway"
    extra = ["--dc", dc] if args.role == "node" else []
    os.execv(sys.executable, [sys.executable, "-m", module, "--config", str(path), *extra])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
