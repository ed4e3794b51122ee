"""What a DC's bank-node and gateway are told at start, built from the cluster's record: the
launcher writes it to their config files, and a container (services/container) builds the same
from the environment, so that both run with the very same settings."""

from __future__ import annotations

from typing import Any

from services.cluster.credentials import tokens_file
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.tls import ca_file, dc_files
from services.cluster.topology import (
    COMPOSE,
    GATEWAY_METRICS_PORT,
    NODE_METRICS_PORT,
    REDIS_PORT,
    SENTINEL_MASTER,
    SENTINEL_PORT,
)
from services.cluster.zookeeper import zk_hosts
from services.coordinator.view import ClusterView, Member
from services.node.server import NodeConfig

SESSION_TIMEOUT_S = 2.0  # ZooKeeper sessions of the nodes: 2-4 s suits these two cores


def server_tls(state: ClusterState, dc: str) -> dict[str, str] | None:
    """The files a DC's gateway and bank-node serve TLS with (and verify peers against)."""
    if not state.spec.tls:
        return None
    cert, key = dc_files(state.home, dc)
    return {"cert": str(cert), "key": str(key), "ca": str(ca_file(state.home))}


def cluster_view(state: ClusterState, dc: str) -> ClusterView:
    """What the bank-node of `dc` is told about the cluster."""
    spec = state.spec
    members: dict[int, dict[str, Member]] = {}
    for shard in range(spec.shards):
        members[shard] = {}
        for member_dc in spec.dc_names:
            pg = member_instance(state, shard, member_dc)
            members[shard][member_dc] = Member(pg.name, member_dc, pg.host, pg.port, str(pg.data_dir))
    sample = member_instance(state, 0, dc)
    return ClusterView(
        dc=dc,
        dcs=spec.dc_names,
        shards=spec.shards,
        members=members,
        node_endpoints={d: spec.node_endpoint(d) for d in spec.dc_names},
        zk_hosts=zk_hosts(spec),
        sentinels=[f"{spec.address(d)}:{SENTINEL_PORT}" for d in spec.dc_names],
        pg_password=state.secrets["pg_password"],
        redis_password=state.secrets["redis_password"],
        zk_auth=state.secrets["zk_auth"],
        session_timeout_s=SESSION_TIMEOUT_S,
        pg_settings={k: v for k, v in sample.settings.items() if k != "synchronous_standby_names"},
        pg_hba_lines=sample.hba_lines,
        # In containers a member's data lives in its own container: its keeper acts on it.
        member_keepers=spec.net == COMPOSE,
    )


def node_config(state: ClusterState, dc: str) -> NodeConfig:
    spec = state.spec
    return NodeConfig(
        shards={},
        slot_ranges=spec.slot_ranges(),
        listen=spec.node_endpoint(dc),
        redis_address=f"{spec.address(dc)}:{REDIS_PORT}",
        zk_hosts=zk_hosts(spec),
        cluster=cluster_view(state, dc).to_json(),
        peer_token=state.secrets["peer_token"],
        tokens_file=str(tokens_file(state.home)),
        tls=server_tls(state, dc),
        metrics_listen=f"{spec.address(dc)}:{NODE_METRICS_PORT}",
        group_commit=spec.group_commit,
    )


def gateway_config(state: ClusterState, dc: str) -> dict[str, Any]:
    spec = state.spec
    return {
        "dc": dc,
        "listen": spec.gateway_endpoint(dc),
        "redis_address": f"{spec.address(dc)}:{REDIS_PORT}",
        "zk_hosts": zk_hosts(spec),
        "zk_auth": state.secrets["zk_auth"],
        "redis_password": state.secrets["redis_password"],
        "sentinels": [f"{spec.address(d)}:{SENTINEL_PORT}" for d in spec.dc_names],
        "sentinel_master": SENTINEL_MASTER,
        "peer_token": state.secrets["peer_token"],
        "tokens_file": str(tokens_file(state.home)),
        "tls": server_tls(state, dc),
        "metrics_listen": f"{spec.address(dc)}:{GATEWAY_METRICS_PORT}",
    }
